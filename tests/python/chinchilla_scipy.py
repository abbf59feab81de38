"""Independent SciPy solver for the Chinchilla approach-3 fit (Hoffmann et al. 2022, sec. 3.3).

Used by the Rust tests to cross-check `gptlab scaling fit`'s own L-BFGS fit.

    python chinchilla_scipy.py TABLE.csv [--n-column COL] [--verbose]

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
a, b in {0, 5, ..., 25} (4,500 starts) is run with method="trf" and an analytic Jacobian; the
start with the lowest objective (recomputed from the final theta) wins.

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


def fit(problem):
    best = None
    results = []
    for x0 in starts():
        with np.errstate(over="ignore", invalid="ignore"):
            sol = least_squares(
                problem.residuals,
                x0,
                jac=problem.jacobian,
                loss="huber",
                f_scale=DELTA,
                method="trf",
                xtol=1e-12,
                ftol=1e-12,
                gtol=1e-12,
                max_nfev=1000,
            )
        if not np.all(np.isfinite(sol.x)):
            continue
        obj = problem.objective(sol.x)
        if not math.isfinite(obj):
            continue
        results.append((obj, sol))
        if best is None or obj < best[0]:
            best = (obj, sol)
    return best, results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("table", help="runs.csv")
    ap.add_argument("--n-column", default="n_params", help="column used as N (default n_params)")
    ap.add_argument("--verbose", action="store_true", help="summary on stderr")
    args = ap.parse_args()

    n, d, loss = read_table(args.table, args.n_column)
    problem = Problem(n, d, loss)
    t0 = time.perf_counter()
    best, results = fit(problem)
    elapsed = time.perf_counter() - t0
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
        objs = np.array([o for o, _ in results])
        near = int(np.sum(objs <= obj * (1 + 1e-6) + 1e-15))
        print(
            f"{len(results)} finite starts of {len(GRID_EXP)**2 * len(GRID_E) * len(GRID_AB)**2} "
            f"in {elapsed:.1f}s; {near} reach the best objective {obj:.6e}; "
            f"best: status={sol.status} nfev={sol.nfev} scipy_cost={sol.cost:.6e}",
            file=sys.stderr,
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
