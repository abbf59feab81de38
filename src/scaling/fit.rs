//! Fitting scaling laws the way Chinchilla's approach 3 does: in log space, as
//! log L̂ = LSE(e, a_1 − α_1·ln x_1, …), i.e. L̂ = E + Σ_j A_j / x_j^α_j, minimising the sum of
//! Huber losses (δ = 1e-3) of the log residuals with L-BFGS (argmin) from every point of a grid
//! of starts, keeping the best. The same machinery fits GPT-4's L(C) = a·C^b + c and Kaplan's
//! L(N), L(D) (one input), and Chinchilla's L(N, D) (two inputs). Intervals come from a seeded
//! bootstrap over runs.

use argmin::core::{CostFunction, Executor, Gradient, State, TerminationReason};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;

use anyhow::{ensure, Context, Result};

use super::RunRow;

pub const HUBER_DELTA: f64 = 1e-3;

/// Huber loss: quadratic within δ of zero, linear beyond.
pub fn huber(r: f64, delta: f64) -> f64 {
    if r.abs() <= delta {
        0.5 * r * r
    } else {
        delta * (r.abs() - 0.5 * delta)
    }
}

fn huber_grad(r: f64, delta: f64) -> f64 {
    r.clamp(-delta, delta)
}

/// Data of one fit in log space: per run, ln of each input and ln of the loss.
#[derive(Clone, Debug)]
pub struct LogData {
    pub ln_x: Vec<Vec<f64>>,
    pub ln_l: Vec<f64>,
}

impl LogData {
    /// `inputs[i]` are run i's law inputs (C; N; or N and D), `losses[i]` its loss.
    pub fn new(inputs: &[Vec<f64>], losses: &[f64]) -> Self {
        LogData {
            ln_x: inputs.iter().map(|x| x.iter().map(|v| v.ln()).collect()).collect(),
            ln_l: losses.iter().map(|l| l.ln()).collect(),
        }
    }

    fn inputs(&self) -> usize {
        self.ln_x.first().map_or(0, Vec::len)
    }

    fn resample(&self, idx: &[usize]) -> LogData {
        LogData {
            ln_x: idx.iter().map(|&i| self.ln_x[i].clone()).collect(),
            ln_l: idx.iter().map(|&i| self.ln_l[i]).collect(),
        }
    }
}

/// θ = [e, a_1..a_k, α_1..α_k]. Returns log L̂ and its gradient in θ.
fn predict_log(theta: &[f64], ln_x: &[f64]) -> (f64, Vec<f64>) {
    let k = ln_x.len();
    let mut terms = Vec::with_capacity(k + 1);
    terms.push(theta[0]);
    terms.extend((0..k).map(|j| theta[1 + j] - theta[1 + k + j] * ln_x[j]));
    let m = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = terms.iter().map(|t| (t - m).exp()).collect();
    let s: f64 = w.iter().sum();
    let mut grad = vec![0.0; 1 + 2 * k];
    grad[0] = w[0] / s;
    for j in 0..k {
        grad[1 + j] = w[1 + j] / s;
        grad[1 + k + j] = -w[1 + j] / s * ln_x[j];
    }
    (m + s.ln(), grad)
}

/// Σ Huber(log L̂ − log L) and its gradient.
pub fn objective(theta: &[f64], data: &LogData) -> (f64, Vec<f64>) {
    let mut total = 0.0;
    let mut grad = vec![0.0; theta.len()];
    for (x, l) in data.ln_x.iter().zip(&data.ln_l) {
        let (p, g) = predict_log(theta, x);
        let r = p - l;
        total += huber(r, HUBER_DELTA);
        let h = huber_grad(r, HUBER_DELTA);
        grad.iter_mut().zip(&g).for_each(|(a, b)| *a += h * b);
    }
    (total, grad)
}

struct Problem<'a>(&'a LogData);

impl CostFunction for Problem<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, p: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        Ok(objective(p, self.0).0)
    }
}

impl Gradient for Problem<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, p: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(objective(p, self.0).1)
    }
}

/// One L-BFGS run.
#[derive(Clone, Debug)]
pub struct Optimum {
    pub theta: Vec<f64>,
    pub objective: f64,
    pub grad_norm: f64,
    /// L-BFGS stopped on its own criterion (not the iteration cap or an error) at a point whose
    /// gradient is near zero and whose parameters are finite.
    pub converged: bool,
}

const MAX_ITERS: u64 = 2000;
const CONVERGED_GRAD: f64 = 1e-6;

pub fn lbfgs(data: &LogData, start: &[f64]) -> Option<Optimum> {
    let linesearch = MoreThuenteLineSearch::new();
    let solver = LBFGS::new(linesearch, 10).with_tolerance_grad(1e-10).ok()?.with_tolerance_cost(1e-16).ok()?;
    let res =
        Executor::new(Problem(data), solver).configure(|s| s.param(start.to_vec()).max_iters(MAX_ITERS)).run().ok()?;
    let state = res.state();
    let theta = state.get_best_param()?.clone();
    let (objective, grad) = objective(&theta, data);
    let grad_norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
    let stopped_itself = matches!(state.get_termination_reason(), Some(TerminationReason::SolverConverged));
    let finite = theta.iter().all(|t| t.is_finite()) && objective.is_finite();
    Some(Optimum { converged: stopped_itself && finite && grad_norm <= CONVERGED_GRAD, theta, objective, grad_norm })
}

/// Chinchilla's grid of starts: e ∈ {−1, −0.5, …, 1}, each a_j ∈ {0, 5, …, 25}, each
/// α_j ∈ {0, 0.5, …, 2}: 4,500 points for two inputs, 150 for one.
pub fn grid(inputs: usize) -> Vec<Vec<f64>> {
    let es = [-1.0, -0.5, 0.0, 0.5, 1.0];
    let as_ = [0.0, 5.0, 10.0, 15.0, 20.0, 25.0];
    let alphas = [0.0, 0.5, 1.0, 1.5, 2.0];
    let mut points: Vec<Vec<f64>> = es.iter().map(|&e| vec![e]).collect();
    for _ in 0..inputs {
        points = points.into_iter().flat_map(|p| as_.iter().map(move |&a| [p.clone(), vec![a]].concat())).collect();
    }
    for _ in 0..inputs {
        points = points.into_iter().flat_map(|p| alphas.iter().map(move |&a| [p.clone(), vec![a]].concat())).collect();
    }
    points
}

/// The best optimum over `starts` (converged ones first, then lowest objective).
fn best_of(data: &LogData, starts: &[Vec<f64>]) -> Option<Optimum> {
    starts.par_iter().filter_map(|s| lbfgs(data, s)).reduce_with(|a, b| {
        let better = (b.converged, -b.objective) > (a.converged, -a.objective);
        if better {
            b
        } else {
            a
        }
    })
}

/// L-BFGS from every grid point.
pub fn fit_grid(data: &LogData) -> Option<Optimum> {
    best_of(data, &grid(data.inputs()))
}

/// For a bootstrap resample: L-BFGS from the full-data optimum and from the resample's best
/// few grid points by objective (a full grid per resample would cost 1,000 × 4,500 runs).
fn fit_resample(data: &LogData, full: &[f64]) -> Option<Optimum> {
    let mut scored: Vec<(f64, Vec<f64>)> =
        grid(data.inputs()).into_iter().map(|g| (objective(&g, data).0, g)).collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut starts = vec![full.to_vec()];
    starts.extend(scored.into_iter().take(4).map(|(_, g)| g));
    best_of(data, &starts)
}

/// Percentile of sorted values (linear interpolation).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Resample `r` of a bootstrap over `n` runs: a pure function of (seed, r).
pub fn resample_indices(seed: u64, r: u64, n: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(r);
    (0..n).map(|_| rng.random_range(0..n)).collect()
}

/// The bootstrap's refits: θ of each resample whose fit converged.
pub fn bootstrap(data: &LogData, full: &[f64], resamples: u64, seed: u64) -> Vec<Vec<f64>> {
    let n = data.ln_l.len();
    (0..resamples)
        .into_par_iter()
        .filter_map(|r| {
            let sample = data.resample(&resample_indices(seed, r, n));
            fit_resample(&sample, full).filter(|o| o.converged).map(|o| o.theta)
        })
        .collect()
}

/// L̂ at `x` (the law's inputs in natural units) for parameters θ.
pub fn predict(theta: &[f64], x: &[f64]) -> f64 {
    let ln_x: Vec<f64> = x.iter().map(|v| v.ln()).collect();
    predict_log(theta, &ln_x).0.exp()
}

/// A 95% percentile interval of `f` over the bootstrap's θs.
pub fn interval(thetas: &[Vec<f64>], f: impl Fn(&[f64]) -> f64) -> [f64; 2] {
    let mut v: Vec<f64> = thetas.iter().map(|t| f(t)).filter(|v| v.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    [percentile(&v, 0.025), percentile(&v, 0.975)]
}

/// Natural parameters of a one-input law L = a·x^b + c (GPT-4's and Kaplan's notation).
pub fn power_params(theta: &[f64]) -> [(&'static str, f64); 3] {
    [("a", theta[1].exp()), ("b", -theta[2]), ("c", theta[0].exp())]
}

/// Natural parameters of Chinchilla's L = E + A/N^α + B/D^β.
pub fn chinchilla_params(theta: &[f64]) -> [(&'static str, f64); 5] {
    [("E", theta[0].exp()), ("A", theta[1].exp()), ("B", theta[2].exp()), ("alpha", theta[3]), ("beta", theta[4])]
}

/// The compute-optimal allocation of Chinchilla's law under C = 6ND.
#[derive(Clone, Debug, Serialize)]
pub struct Frontier {
    #[serde(rename = "G")]
    pub g: f64,
    /// N_opt ∝ C^n_exponent = β/(α+β).
    pub n_exponent: f64,
    /// D_opt ∝ C^d_exponent = α/(α+β).
    pub d_exponent: f64,
}

impl Frontier {
    pub fn new(theta: &[f64]) -> Frontier {
        let (a, b, alpha, beta) = (theta[1].exp(), theta[2].exp(), theta[3], theta[4]);
        Frontier {
            g: (alpha * a / (beta * b)).powf(1.0 / (alpha + beta)),
            n_exponent: beta / (alpha + beta),
            d_exponent: alpha / (alpha + beta),
        }
    }

    /// (N_opt, D_opt) at compute C.
    pub fn at(&self, c: f64) -> (f64, f64) {
        (self.g * (c / 6.0).powf(self.n_exponent), (c / 6.0).powf(self.d_exponent) / self.g)
    }
}

/// Least squares of y = p + q·x; (p, q).
pub fn linear_fit(x: &[f64], y: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let q = sxy / sxx;
    (my - q * mx, q)
}

/// Options of `gptlab scaling fit`.
#[derive(Clone, Debug)]
pub struct FitOptions {
    pub bootstrap: u64,
    pub seed: u64,
    pub predict_compute: Vec<f64>,
    pub predict_nd: Option<(f64, f64)>,
}

impl FitOptions {
    /// Refuses settings that would write NaN: too few resamples for an interval, or a
    /// prediction at a non-positive compute, size or token count.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.bootstrap >= 2,
            "--bootstrap must be at least 2 resamples for an interval, got {}",
            self.bootstrap
        );
        for &c in &self.predict_compute {
            ensure!(c.is_finite() && c > 0.0, "--predict-compute must be a positive number of FLOPs, got {c}");
        }
        if let Some((n, d)) = self.predict_nd {
            ensure!(
                n.is_finite() && n > 0.0 && d.is_finite() && d > 0.0,
                "--predict-n and --predict-d must be positive, got {n} and {d}"
            );
        }
        Ok(())
    }
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions { bootstrap: 1000, seed: 0, predict_compute: Vec::new(), predict_nd: None }
    }
}

/// One fitted law as `fit.json` holds it.
#[derive(Clone, Debug, Serialize)]
pub struct LawFit {
    pub formula: &'static str,
    pub params: BTreeMap<String, f64>,
    pub converged: bool,
    pub objective: f64,
    pub grad_norm: f64,
    /// The runs the law was fitted on.
    pub runs_used: Vec<String>,
    /// 95% bootstrap percentile interval of each parameter.
    pub intervals: BTreeMap<String, [f64; 2]>,
    pub n_bootstrap: u64,
    pub n_bootstrap_converged: usize,
    #[serde(skip)]
    pub theta: Vec<f64>,
    #[serde(skip)]
    pub boot: Vec<Vec<f64>>,
}

/// A law that could not be fitted at all, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    pub skipped: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum LawOutcome {
    Fitted(Box<LawFit>),
    Skipped(Skipped),
}

impl LawOutcome {
    pub fn fitted(&self) -> Option<&LawFit> {
        match self {
            LawOutcome::Fitted(f) if f.converged => Some(f),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct FrontierPoint {
    pub compute: f64,
    pub n_opt: f64,
    pub d_opt: f64,
    pub tokens_per_param: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct FrontierFit {
    #[serde(flatten)]
    pub law: Frontier,
    pub points: Vec<FrontierPoint>,
}

/// GPT-4's capability law: −mean log pass-rate = α·C^(−k), where a problem's pass rate is the
/// model's probability of its answer, averaged in log over the problems of every family.
#[derive(Clone, Debug, Serialize)]
pub struct CapabilityFit {
    pub formula: &'static str,
    pub alpha: f64,
    pub k: f64,
    pub intervals: BTreeMap<String, [f64; 2]>,
    pub families: Vec<String>,
    /// (compute, −mean log pass-rate) per run.
    pub points: Vec<(f64, f64)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Prediction {
    pub law: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compute: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d: Option<f64>,
    pub loss: f64,
    pub interval: [f64; 2],
}

/// Everything `fit.json` holds.
#[derive(Clone, Debug, Serialize)]
pub struct Fit {
    pub n_runs: usize,
    pub bootstrap_seed: u64,
    pub laws: BTreeMap<String, LawOutcome>,
    pub frontier: Option<FrontierFit>,
    pub capability: Option<CapabilityFit>,
    pub predictions: Vec<Prediction>,
}

const POWER_FORMULA: [&str; 3] = ["L(C) = a*C^b + c", "L(N) = a*N^b + c", "L(D) = a*D^b + c"];
const CHINCHILLA_FORMULA: &str = "L(N, D) = E + A/N^alpha + B/D^beta";

/// The runs with the lowest loss at each distinct value of `key`, in increasing key order.
fn envelope(rows: &[RunRow], key: impl Fn(&RunRow) -> f64) -> Vec<&RunRow> {
    let mut best: BTreeMap<u64, &RunRow> = BTreeMap::new();
    for r in rows {
        let e = best.entry(key(r).to_bits()).or_insert(r);
        if r.loss < e.loss {
            *e = r;
        }
    }
    best.into_values().collect()
}

/// The compute-efficient runs: those no cheaper-or-equal run beats on loss.
pub fn pareto(rows: &[RunRow]) -> Vec<&RunRow> {
    let mut sorted: Vec<&RunRow> = rows.iter().collect();
    sorted.sort_by(|a, b| a.compute().total_cmp(&b.compute()).then(a.loss.total_cmp(&b.loss)));
    let mut out: Vec<&RunRow> = Vec::new();
    for r in sorted {
        if out.last().is_none_or(|l| r.loss < l.loss) {
            out.push(r);
        }
    }
    out
}

/// Natural (named) parameters from a log-space θ.
type ParamNames = dyn Fn(&[f64]) -> Vec<(&'static str, f64)>;

fn fit_law(
    formula: &'static str,
    runs: &[&RunRow],
    inputs: impl Fn(&RunRow) -> Vec<f64>,
    names: &ParamNames,
    opts: &FitOptions,
) -> Result<LawFit> {
    let x: Vec<Vec<f64>> = runs.iter().map(|r| inputs(r)).collect();
    let l: Vec<f64> = runs.iter().map(|r| r.loss).collect();
    let data = LogData::new(&x, &l);
    let mut best = fit_grid(&data).context("no start of the grid gave a finite fit")?;
    // An optimum at the edge of float range (e.g. A = e^800) is no fit either.
    best.converged &= names(&best.theta).iter().all(|(_, v)| v.is_finite());
    let boot = if best.converged { bootstrap(&data, &best.theta, opts.bootstrap, opts.seed) } else { Vec::new() };
    let params = names(&best.theta).into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let intervals = (0..best.theta.len())
        .map(|i| {
            let key = names(&best.theta)[i].0;
            (key.to_string(), interval(&boot, |t| names(t)[i].1))
        })
        .collect();
    Ok(LawFit {
        formula,
        params,
        converged: best.converged,
        objective: best.objective,
        grad_norm: best.grad_norm,
        runs_used: runs.iter().map(|r| r.name.clone()).collect(),
        intervals,
        n_bootstrap: opts.bootstrap,
        n_bootstrap_converged: boot.len(),
        theta: best.theta,
        boot,
    })
}

/// Fits every law to `rows`; `log_pass_rates` (run name → family → mean log pass rate), when
/// given, adds the capability law and its predictions.
pub fn fit_all(
    rows: &[RunRow],
    log_pass_rates: Option<&BTreeMap<String, BTreeMap<String, f64>>>,
    opts: &FitOptions,
) -> Result<Fit> {
    opts.validate()?;
    crate::scaling::validate_rows(rows)?;
    let power = |t: &[f64]| power_params(t).to_vec();
    let chin = |t: &[f64]| chinchilla_params(t).to_vec();
    let mut laws = BTreeMap::new();

    let frontier_runs = pareto(rows);
    ensure!(
        frontier_runs.len() >= 3,
        "the compute law L(C) = a*C^b + c has 3 parameters but only {} run(s) are compute-efficient \
         (lowest loss at their compute); {} runs in all",
        frontier_runs.len(),
        rows.len()
    );
    ensure!(rows.len() >= 5, "the Chinchilla law has 5 parameters but only {} runs were given", rows.len());
    let compute = fit_law(POWER_FORMULA[0], &frontier_runs, |r| vec![r.compute()], &power, opts)?;
    let all: Vec<&RunRow> = rows.iter().collect();
    let chinchilla = fit_law(CHINCHILLA_FORMULA, &all, |r| vec![r.n_params, r.n_tokens], &chin, opts)?;

    let kaplan = |i: usize, runs: Vec<&RunRow>, what: &str, x: fn(&RunRow) -> f64| -> Result<LawOutcome> {
        if runs.len() < 4 {
            let skipped =
                format!("needs at least 4 distinct {what} (3 parameters and one to spare), got {}", runs.len());
            return Ok(LawOutcome::Skipped(Skipped { skipped }));
        }
        Ok(LawOutcome::Fitted(Box::new(fit_law(POWER_FORMULA[i], &runs, |r| vec![x(r)], &power, opts)?)))
    };
    let n_runs = envelope(rows, |r| r.n_params_non_embedding);
    let d_runs = envelope(rows, |r| r.n_tokens);
    laws.insert("kaplan_n".into(), kaplan(1, n_runs, "n_params_non_embedding", |r| r.n_params_non_embedding)?);
    laws.insert("kaplan_d".into(), kaplan(2, d_runs, "n_tokens", |r| r.n_tokens)?);

    let mut predictions = Vec::new();
    if compute.converged {
        for &c in &opts.predict_compute {
            predictions.push(Prediction {
                law: "compute",
                compute: Some(c),
                n: None,
                d: None,
                loss: predict(&compute.theta, &[c]),
                interval: interval(&compute.boot, |t| predict(t, &[c])),
            });
        }
    }
    let frontier = chinchilla.converged.then(|| {
        let law = Frontier::new(&chinchilla.theta);
        let (lo, hi) = super::compute_range(rows, opts.predict_compute.iter().copied());
        let points = super::log_range(lo, hi, 9)
            .into_iter()
            .map(|c| {
                let (n, d) = law.at(c);
                FrontierPoint { compute: c, n_opt: n, d_opt: d, tokens_per_param: d / n }
            })
            .collect();
        FrontierFit { law, points }
    });
    if let (true, Some((n, d))) = (chinchilla.converged, opts.predict_nd) {
        predictions.push(Prediction {
            law: "chinchilla",
            compute: Some(6.0 * n * d),
            n: Some(n),
            d: Some(d),
            loss: predict(&chinchilla.theta, &[n, d]),
            interval: interval(&chinchilla.boot, |t| predict(t, &[n, d])),
        });
    }
    laws.insert("compute".into(), LawOutcome::Fitted(Box::new(compute)));
    laws.insert("chinchilla".into(), LawOutcome::Fitted(Box::new(chinchilla)));
    let capability = match log_pass_rates.map(|p| capability_fit(rows, p, opts)).transpose()?.flatten() {
        Some((cap, preds)) => {
            predictions.extend(preds);
            Some(cap)
        }
        None => None,
    };
    Ok(Fit { n_runs: rows.len(), bootstrap_seed: opts.seed, laws, frontier, capability, predictions })
}

/// −mean log pass-rate per run over the families every run was scored on (each family's mean
/// log-probability of the right answers), its power law in compute fitted as a line in log-log
/// space, bootstrap over runs for the intervals, and its value at each of
/// `opts.predict_compute`. None when fewer than 3 runs have log pass rates.
fn capability_fit(
    rows: &[RunRow],
    log_pass_rates: &BTreeMap<String, BTreeMap<String, f64>>,
    opts: &FitOptions,
) -> Result<Option<(CapabilityFit, Vec<Prediction>)>> {
    let runs: Vec<(&RunRow, &BTreeMap<String, f64>)> =
        rows.iter().filter_map(|r| log_pass_rates.get(&r.name).map(|p| (r, p))).collect();
    let Some((_, first)) = runs.first() else { return Ok(None) };
    let families: Vec<String> =
        first.keys().filter(|f| runs.iter().all(|(_, p)| p.get(*f).is_some_and(|v| v.is_finite()))).cloned().collect();
    if runs.len() < 3 || families.is_empty() {
        return Ok(None);
    }
    let points: Vec<(f64, f64)> = runs
        .iter()
        .map(|(r, p)| (r.compute(), -families.iter().map(|f| p[f]).sum::<f64>() / families.len() as f64))
        .collect();
    // A run certain of every answer has y = 0, off any power law: leave it out.
    let usable: Vec<(f64, f64)> = points.iter().copied().filter(|&(_, y)| y > 0.0).collect();
    if usable.len() < 3 {
        return Ok(None);
    }
    let fit = |pts: &[(f64, f64)]| {
        let x: Vec<f64> = pts.iter().map(|p| p.0.ln()).collect();
        let y: Vec<f64> = pts.iter().map(|p| p.1.ln()).collect();
        let (p, q) = linear_fit(&x, &y);
        [p.exp(), -q]
    };
    let [alpha, k] = fit(&usable);
    let boot: Vec<Vec<f64>> = (0..opts.bootstrap)
        .map(|r| resample_indices(opts.seed, r, usable.len()).iter().map(|&i| usable[i]).collect::<Vec<_>>())
        .filter(|s| s.iter().any(|p| p.0 != s[0].0))
        .map(|s| fit(&s).to_vec())
        .collect();
    let intervals =
        [("alpha".to_string(), interval(&boot, |t| t[0])), ("k".to_string(), interval(&boot, |t| t[1]))].into();
    let predictions = opts
        .predict_compute
        .iter()
        .map(|&c| Prediction {
            law: "capability",
            compute: Some(c),
            n: None,
            d: None,
            loss: alpha * c.powf(-k),
            interval: interval(&boot, |t| t[0] * c.powf(-t[1])),
        })
        .collect();
    let formula = "-mean log pass_rate = alpha*C^(-k)";
    Ok(Some((CapabilityFit { formula, alpha, k, intervals, families, points }, predictions)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huber_by_hand() {
        assert_eq!(huber(0.0005, 1e-3), 0.5 * 0.0005 * 0.0005);
        assert!((huber(-0.003, 1e-3) - 1e-3 * (0.003 - 0.0005)).abs() < 1e-15);
        assert_eq!(huber_grad(0.01, 1e-3), 1e-3);
    }

    #[test]
    fn objective_gradient_matches_finite_differences() {
        let inputs: Vec<Vec<f64>> = (0..12).map(|i| vec![1e6 * 1.7f64.powi(i), 3e7 * 1.3f64.powi(11 - i)]).collect();
        let losses: Vec<f64> = (0..12).map(|i| 2.0 + 0.3 * ((i * 7 % 5) as f64) / 5.0).collect();
        let data = LogData::new(&inputs, &losses);
        // Residuals both inside and outside δ, so both branches of the Huber loss are checked.
        for theta in [vec![0.5, 6.0, 5.5, 0.34, 0.28], vec![0.6, 5.9, 6.1, 0.33, 0.3]] {
            let (_, g) = objective(&theta, &data);
            for i in 0..theta.len() {
                let h = 1e-6;
                let (mut up, mut down) = (theta.clone(), theta.clone());
                up[i] += h;
                down[i] -= h;
                let fd = (objective(&up, &data).0 - objective(&down, &data).0) / (2.0 * h);
                assert!((fd - g[i]).abs() <= 1e-6 * (1.0 + g[i].abs()), "θ[{i}]: analytic {} vs fd {fd}", g[i]);
            }
        }
    }

    #[test]
    fn grid_sizes_follow_chinchilla() {
        assert_eq!(grid(2).len(), 4500);
        assert_eq!(grid(1).len(), 150);
        assert!(grid(2).iter().all(|p| p.len() == 5));
    }

    #[test]
    fn percentile_interpolates() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert!((percentile(&v, 0.125) - 1.5).abs() < 1e-12);
    }

    #[test]
    fn frontier_by_hand() {
        // α = β: N_opt = G·(C/6)^½, with G = (A/B)^(1/(2α)).
        let theta = [0.5, 4.0f64.ln(), 1.0f64.ln(), 0.5, 0.5];
        let f = Frontier::new(&theta);
        assert!((f.g - 4.0).abs() < 1e-12 && (f.n_exponent - 0.5).abs() < 1e-12);
        let (n, d) = f.at(6e4);
        assert!((n - 400.0).abs() < 1e-9 && (d - 25.0).abs() < 1e-9 && (6.0 * n * d - 6e4).abs() < 1e-6);
    }

    #[test]
    fn linear_fit_by_hand() {
        let (p, q) = linear_fit(&[0.0, 1.0, 2.0], &[1.0, 3.0, 5.0]);
        assert!((p - 1.0).abs() < 1e-12 && (q - 2.0).abs() < 1e-12);
    }
}

#[cfg(test)]
mod capability_tests {
    use super::*;

    fn row(name: &str, c: f64) -> RunRow {
        RunRow {
            name: name.into(),
            n_layer: None,
            n_embd: None,
            n_head: None,
            n_params: c / 6e6,
            n_params_non_embedding: c / 6e6,
            n_tokens: 1e6,
            compute: None,
            compute_exact: None,
            loss: 3.0,
            train_loss: None,
        }
    }

    #[test]
    fn capability_law_is_recovered_and_predicts_a_larger_run() {
        // −mean log pass-rate = 2·C^−0.1 exactly: families "a" and "b" at log rates that average to it.
        let rows: Vec<RunRow> = (0..5).map(|i| row(&format!("r{i}"), 1e10 * 10f64.powi(i))).collect();
        let mut rates = BTreeMap::new();
        for r in &rows {
            let y = 2.0 * r.compute().powf(-0.1);
            rates.insert(r.name.clone(), BTreeMap::from([("a".into(), -0.5 * y), ("b".into(), -1.5 * y)]));
        }
        let opts = FitOptions { bootstrap: 50, predict_compute: vec![1e16], ..FitOptions::default() };
        let (cap, preds) = capability_fit(&rows, &rates, &opts).unwrap().expect("a law");
        assert_eq!(cap.families, ["a", "b"]);
        assert!((cap.alpha - 2.0).abs() < 1e-9 && (cap.k - 0.1).abs() < 1e-12, "{cap:?}");
        let [lo, hi] = cap.intervals["k"];
        assert!(lo <= 0.1 + 1e-12 && 0.1 - 1e-12 <= hi);
        let expected = 2.0 * 1e16f64.powf(-0.1);
        assert_eq!(preds.len(), 1);
        assert!((preds[0].loss - expected).abs() < 1e-9 && preds[0].law == "capability");
        // A family one run lacks is left out; fewer than three runs give no law.
        rates.get_mut("r0").unwrap().remove("b");
        assert_eq!(capability_fit(&rows, &rates, &opts).unwrap().unwrap().0.families, ["a"]);
        assert!(capability_fit(&rows[..2], &rates, &opts).unwrap().is_none());
    }
}
