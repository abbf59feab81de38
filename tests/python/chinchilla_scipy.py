"""Independent SciPy solver for the Chinchilla approach-3 fit (Hoffmann et al. 2022, sec. 3.3).

Used by the Rust tests to cross-check `gptlab scaling fit`'s own L-BFGS fit.

    python chinchilla_scipy.py TABLE.csv [--n-column COL] [--full] [--verbose]

TABLE.csv is a runs.csv as written by `gptlab scaling fit` (header
name,n_layer,n_embd,n_head,n_params,n_params_non_embedding,n_tokens,compute,compute_exact,loss,train_loss).
N is the column `n_params` (override with --n-column, e.g. n_params_non_embedding), D is
`n_tokens`, L is `loss`.

Model, in log space with theta = (a, b, e, alpha, beta):
    log L_hat = logsumexp(a - alpha*ln N, b - beta*ln D, e)
i.e. L_hat = E + A/N^alpha + B/D^beta with A = e^a, B = e^b, E = e^e.
Objective: sum_i Huber_delta(log L_hat_i - log L_i), delta = 1e-3, where
Huber_delta(r) = r^2/2 if |r| <= delta else delta*(|r| - delta/2).
This equals scipy's least_squares cost with loss="huber", f_scale=delta.

Every start of the grid alpha, beta in {0, .5, 1, 1.5, 2}, e in {-1, -.5, 0, .5, 1},
a, b in {0, 5, ..., 25} (4,500 starts) is run with least_squares(method="trf", loss="huber",
f_scale=1e-3, x_scale="jac", analytic Jacobian, xtol=ftol=gtol=1e-12). Running all 4,500 to
convergence takes minutes (about 45 ms and 150 evaluations a start), so by default it is done
in two phases: every start gets SCREEN_NFEV evaluations, then the POLISH best of those (by
objective) continue from where they stopped, with the same tolerances, to convergence. With
--full every start runs to convergence instead. Either way the lowest objective (recomputed
from the final theta with the formula above) wins.

Prints one JSON line: {"E":..,"A":..,"B":..,"alpha":..,"beta":..,"objective":..}.
With --verbose, a summary (timing, spread of the best starts) goes to stderr.
"""
import argparse
import csv
import itertools
import json
import math
import sys
import time

import numpy as np
from scipy.optimize import least_squares

DELTA = 1e-3
GRID_EXP = [0.0, 0.5, 1.0, 1.5, 2.0]
GRID_E = [-1.0, -0.5, 0.0, 0.5, 1.0]
GRID_AB = [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]
TOL = 1e-12
MAX_NFEV = 2000  # per start, to convergence (status 0 = stopped here)
SCREEN_NFEV = 15  # phase 1: evaluations per start
POLISH = 50  # phase 2: how many of the best phase-1 starts run on to convergence


def read_table(path, n_column):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"error: {path}: no rows")
    for col in (n_column, "n_tokens", "loss"):
        if col not in rows[0]:
            sys.exit(f"error: {path}: no column {col!r} (have {', '.join(rows[0])})")
    n = np.array([float(r[n_column]) for r in rows])
    d = np.array([float(r["n_tokens"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    if not (np.all(n > 0) and np.all(d > 0) and np.all(loss > 0)):
        sys.exit(f"error: {path}: N, D and loss must all be positive")
    return n, d, loss


class Problem:
    def __init__(self, n, d, loss):
        self.log_n = np.log(n)
        self.log_d = np.log(d)
        self.log_l = np.log(loss)

    def terms(self, th):
        a, b, e, alpha, beta = th
        t = np.empty((3, self.log_n.size))
        t[0] = a - alpha * self.log_n
        t[1] = b - beta * self.log_d
        t[2] = e
        return t

    def log_pred(self, th):
        t = self.terms(th)
        m = t.max(axis=0)
        return m + np.log(np.exp(t - m).sum(axis=0))

    def residuals(self, th):
        return self.log_pred(th) - self.log_l

    def jacobian(self, th):
        t = self.terms(th)
        w = np.exp(t - t.max(axis=0))
        w /= w.sum(axis=0)  # softmax weights: d logsumexp / d term_k
        jac = np.empty((self.log_n.size, 5))
        jac[:, 0] = w[0]
        jac[:, 1] = w[1]
        jac[:, 2] = w[2]
        jac[:, 3] = -w[0] * self.log_n
        jac[:, 4] = -w[1] * self.log_d
        return jac

    def objective(self, th):
        r = np.abs(self.residuals(th))
        return float(np.where(r <= DELTA, 0.5 * r * r, DELTA * (r - 0.5 * DELTA)).sum())


def starts():
    for alpha, beta, e, a, b in itertools.product(GRID_EXP, GRID_EXP, GRID_E, GRID_AB, GRID_AB):
        yield np.array([a, b, e, alpha, beta])


def solve(problem, x0, max_nfev):
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        sol = least_squares(
            problem.residuals,
            x0,
            jac=problem.jacobian,
            loss="huber",
            f_scale=DELTA,
            method="trf",
            x_scale="jac",
            xtol=TOL,
            ftol=TOL,
            gtol=TOL,
            max_nfev=max_nfev,
        )
    obj = problem.objective(sol.x) if np.all(np.isfinite(sol.x)) else math.inf
    return (obj if math.isfinite(obj) else math.inf), sol


def fit(problem, full=False):
    """(objective, solution) of the best start, and a summary dict."""
    grid = list(starts())
    t0 = time.perf_counter()
    first = [solve(problem, x0, MAX_NFEV if full else SCREEN_NFEV) for x0 in grid]
    t1 = time.perf_counter()
    results = list(first)
    if not full:
        order = sorted(range(len(first)), key=lambda i: first[i][0])
        for i in order[:POLISH]:
            if first[i][0] < math.inf and first[i][1].status == 0:  # stopped by the cap
                results.append(solve(problem, first[i][1].x, MAX_NFEV))
    t2 = time.perf_counter()
    finite = [r for r in results if r[0] < math.inf]
    if not finite:
        return None, {}
    best = min(finite, key=lambda r: r[0])
    summary = {
        "starts": len(grid),
        "finite": sum(r[0] < math.inf for r in first),
        "phase1_s": t1 - t0,
        "phase2_s": t2 - t1,
        "at_best": sum(r[0] <= best[0] * (1 + 1e-6) + 1e-15 for r in finite),
    }
    return best, summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("table", help="runs.csv")
    ap.add_argument("--n-column", default="n_params", help="column used as N (default n_params)")
    ap.add_argument("--full", action="store_true", help="run every start to convergence (minutes)")
    ap.add_argument("--verbose", action="store_true", help="summary on stderr")
    args = ap.parse_args()

    n, d, loss = read_table(args.table, args.n_column)
    problem = Problem(n, d, loss)
    best, summary = fit(problem, full=args.full)
    if best is None:
        sys.exit("error: no start produced a finite fit")
    obj, sol = best
    a, b, e, alpha, beta = (float(v) for v in sol.x)
    out = {
        "E": math.exp(e),
        "A": math.exp(a),
        "B": math.exp(b),
        "alpha": alpha,
        "beta": beta,
        "objective": obj,
    }
    if args.verbose:
        mode = "full" if args.full else f"screen {SCREEN_NFEV} nfev, polish {POLISH}"
        print(
            f"{len(n)} rows; {summary['finite']}/{summary['starts']} finite starts ({mode}); "
            f"phase 1 {summary['phase1_s']:.1f}s, phase 2 {summary['phase2_s']:.1f}s; "
            f"{summary['at_best']} solves reach the best objective {obj:.6e}; "
            f"best: status={sol.status} nfev={sol.nfev} scipy_cost={sol.cost:.6e}; "
            f"theta (a, b, e, alpha, beta) = {[round(float(v), 6) for v in sol.x]}",
            file=sys.stderr,
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
