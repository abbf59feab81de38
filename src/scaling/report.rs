//! `gptlab scaling fit`'s outputs: `fit.json`, the plots (loss against compute with the fitted
//! law and the predictions, iso-FLOP curves, N_opt against C, residuals, the capability law)
//! as PNG and SVG, and `report.md` embedding them with a table of parameters and intervals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::fit::{self, Fit, FitOptions, LawOutcome};
use super::sweep::{read_results, RunResult};
use super::{compute_range, log_range, RunRow};
use crate::plot::{human, LinePlot, Series};
use crate::report::Report;

/// The runs to fit: a sweep directory (with its per-run details) or a bare table.
pub struct FitInput {
    pub rows: Vec<RunRow>,
    pub results: Vec<RunResult>,
    pub source: PathBuf,
}

impl FitInput {
    pub fn load(runs: Option<&Path>, table: Option<&Path>) -> Result<FitInput> {
        match (runs, table) {
            (Some(dir), None) => {
                let jsonl = dir.join("runs.jsonl");
                if !jsonl.exists() {
                    bail!("{} has no runs.jsonl: run `gptlab scaling sweep` into it first", dir.display());
                }
                let results = read_results(&jsonl)?;
                let rows = results.iter().map(|r| r.row.clone()).collect::<Vec<_>>();
                super::validate_rows(&rows).with_context(|| jsonl.display().to_string())?;
                Ok(FitInput { rows, results, source: dir.to_path_buf() })
            }
            (None, Some(path)) => {
                Ok(FitInput { rows: super::read_table(path)?, results: Vec::new(), source: path.to_path_buf() })
            }
            _ => bail!("give --runs DIR or --table FILE.csv"),
        }
    }

    /// The sweep directory itself, or the table's folder.
    pub fn default_out(&self) -> PathBuf {
        if self.source.is_dir() {
            self.source.clone()
        } else {
            self.source.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        }
    }

    fn log_pass_rates(&self) -> Option<BTreeMap<String, BTreeMap<String, f64>>> {
        let rates: BTreeMap<_, _> = self
            .results
            .iter()
            .filter(|r| !r.log_pass_rates.is_empty())
            .map(|r| (r.row.name.clone(), r.log_pass_rates.clone()))
            .collect();
        (!rates.is_empty()).then_some(rates)
    }
}

/// Fits, then writes `fit.json`, the plots and `report.md` into `out`.
pub fn fit_and_report(input: &FitInput, opts: &FitOptions, out: &Path) -> Result<Fit> {
    let fit = fit::fit_all(&input.rows, input.log_pass_rates().as_ref(), opts)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("fit.json"), serde_json::to_string_pretty(&fit)?)?;
    plot_all(&input.rows, &fit, out)?;
    write_report(input, &fit, out)?;
    Ok(fit)
}

/// One line per law on stdout: its parameters with intervals, or that it did not converge.
pub fn print_summary(fit: &Fit) {
    for (name, law) in &fit.laws {
        println!("{name}: {}", law_line(law));
    }
    for p in &fit.predictions {
        println!(
            "prediction ({}) at C = {:.3e}: loss {:.4} [{:.4}, {:.4}]",
            p.law,
            p.compute.unwrap_or(f64::NAN),
            p.loss,
            p.interval[0],
            p.interval[1]
        );
    }
}

fn law_line(law: &LawOutcome) -> String {
    match law {
        LawOutcome::Skipped(s) => format!("skipped: {}", s.skipped),
        LawOutcome::Fitted(f) if !f.converged => {
            format!("DID NOT CONVERGE (gradient norm {:.2e}); no parameters reported", f.grad_norm)
        }
        LawOutcome::Fitted(f) => f
            .params
            .iter()
            .map(|(k, v)| {
                let [lo, hi] = f.intervals[k];
                format!("{k} = {} [{}, {}]", sig(*v), sig(lo), sig(hi))
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Four significant digits.
fn sig(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-3) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

/// Log-log loss against compute: every run, the runs L(C) was fitted on, the law (θ in log-space
/// form), predictions with their intervals and, once known, the actual outcome.
pub fn plot_loss_vs_compute(
    rows: &[RunRow],
    theta: &[f64],
    predictions: &[(f64, f64, [f64; 2])],
    actual: Option<(f64, f64)>,
    stem: &Path,
) -> Result<()> {
    let (c_lo, c_hi) = compute_range(rows, predictions.iter().map(|p| p.0).chain(actual.map(|a| a.0)));
    let frontier: Vec<(f64, f64)> = super::fit::pareto(rows).iter().map(|r| (r.compute(), r.loss)).collect();
    let mut series = vec![
        Series::dots("runs", rows.iter().map(|r| (r.compute(), r.loss)).collect()),
        Series::dots("fitted on (lowest loss at its compute)", frontier),
        Series::line(
            "L(C) = a*C^b + c",
            log_range(c_lo, c_hi, 60).into_iter().map(|c| (c, fit::predict(theta, &[c]))).collect(),
        ),
    ];
    if !predictions.is_empty() {
        series.push(Series::dots("prediction", predictions.iter().map(|p| (p.0, p.1)).collect()));
        let bars: Vec<(f64, f64, f64)> = predictions.iter().map(|p| (p.0, p.2[0], p.2[1])).collect();
        series.push(Series::bars("95% bootstrap interval", &bars));
    }
    if let Some(a) = actual {
        series.push(Series::dots("actual", vec![a]));
    }
    LinePlot {
        title: "final loss against training compute".into(),
        x_label: "compute C = 6ND (FLOPs)".into(),
        y_label: "validation loss (nats/token)".into(),
        series,
        log_x: true,
        log_y: true,
    }
    .save(stem)
}

fn plot_all(rows: &[RunRow], fit: &Fit, out: &Path) -> Result<()> {
    let predictions: Vec<&fit::Prediction> = fit.predictions.iter().filter(|p| p.law == "compute").collect();
    let (c_lo, c_hi) = compute_range(rows, predictions.iter().filter_map(|p| p.compute));

    if let Some(law) = fit.laws.get("compute").and_then(LawOutcome::fitted) {
        let marked: Vec<(f64, f64, [f64; 2])> =
            predictions.iter().filter_map(|p| Some((p.compute?, p.loss, p.interval))).collect();
        plot_loss_vs_compute(rows, &law.theta, &marked, None, &out.join("loss_vs_compute"))?;
    }

    if let Some(chin) = fit.laws.get("chinchilla").and_then(LawOutcome::fitted) {
        let (n_lo, n_hi) = rows.iter().fold((f64::MAX, f64::MIN), |(a, b), r| (a.min(r.n_params), b.max(r.n_params)));
        let mut series: Vec<Series> = log_range(c_lo, c_hi, 4)
            .into_iter()
            .map(|c| {
                let curve = log_range(n_lo, n_hi, 50)
                    .into_iter()
                    .map(|n| (n, fit::predict(&chin.theta, &[n, c / (6.0 * n)])))
                    .collect();
                Series::line(&format!("C = {:.1e}", c), curve)
            })
            .collect();
        series.push(Series::dots("runs", rows.iter().map(|r| (r.n_params, r.loss)).collect()));
        LinePlot {
            title: "iso-FLOP curves of the Chinchilla fit".into(),
            x_label: "parameters N".into(),
            y_label: "loss (nats/token)".into(),
            series,
            log_x: true,
            log_y: true,
        }
        .save(&out.join("isoflop"))?;

        let residuals: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| (r.compute(), r.loss.ln() - fit::predict(&chin.theta, &[r.n_params, r.n_tokens]).ln()))
            .collect();
        LinePlot {
            title: "residuals of the Chinchilla fit".into(),
            x_label: "compute (FLOPs)".into(),
            y_label: "log L - log L_fit".into(),
            series: vec![Series::dots("runs", residuals), Series::line("zero", vec![(c_lo, 0.0), (c_hi, 0.0)])],
            log_x: true,
            log_y: false,
        }
        .save(&out.join("residuals"))?;
    }
    if let Some(frontier) = &fit.frontier {
        let mut series = vec![Series::line("N_opt(C)", frontier.points.iter().map(|p| (p.compute, p.n_opt)).collect())];
        series.push(Series::dots("runs", rows.iter().map(|r| (r.compute(), r.n_params)).collect()));
        LinePlot {
            title: "compute-optimal model size".into(),
            x_label: "compute (FLOPs)".into(),
            y_label: "parameters N".into(),
            series,
            log_x: true,
            log_y: true,
        }
        .save(&out.join("n_opt"))?;
    }
    if let Some(cap) = &fit.capability {
        let (lo, hi) = cap.points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let curve = log_range(lo, hi, 40).into_iter().map(|c| (c, cap.alpha * c.powf(-cap.k))).collect();
        LinePlot {
            title: "capability: arithmetic log pass rate against compute".into(),
            x_label: "compute (FLOPs)".into(),
            y_label: "-mean log pass rate".into(),
            series: vec![Series::dots("runs", cap.points.clone()), Series::line(cap.formula, curve)],
            log_x: true,
            log_y: true,
        }
        .save(&out.join("capability"))?;
    }
    Ok(())
}

fn write_report(input: &FitInput, fit: &Fit, out: &Path) -> Result<()> {
    let mut rep = Report::new("Scaling-law fit");
    rep.paragraph(&format!(
        "{} runs from `{}`. Every law is fitted in log space (log L = LSE of its terms) by minimising \
         the sum of Huber losses (δ = 1e-3) of the log residuals with L-BFGS from a grid of starts \
         (Chinchilla's approach 3). Intervals are 95% percentile intervals of a bootstrap over runs \
         ({} resamples, seed {}). A law that did not converge is reported as such, without parameters.",
        fit.n_runs,
        input.source.display(),
        fit.laws
            .values()
            .find_map(|l| match l {
                LawOutcome::Fitted(f) => Some(f.n_bootstrap),
                LawOutcome::Skipped(_) => None,
            })
            .unwrap_or(0),
        fit.bootstrap_seed
    ));
    rep.heading("Fitted laws");
    let mut rows = Vec::new();
    for (name, law) in &fit.laws {
        let (formula, converged, used) = match law {
            LawOutcome::Fitted(f) => (
                f.formula.to_string(),
                f.converged.to_string(),
                format!(
                    "{} runs, {} of {} resamples converged",
                    f.runs_used.len(),
                    f.n_bootstrap_converged,
                    f.n_bootstrap
                ),
            ),
            LawOutcome::Skipped(_) => ("".into(), "-".into(), "-".into()),
        };
        rows.push(vec![name.clone(), formula, converged, law_line(law), used]);
    }
    rep.table(&["law", "formula", "converged", "parameters [95% interval]", "fitted on"], &rows);
    rep.paragraph(
        "L(C) is fitted on the compute-efficient runs (no cheaper run reaches a lower loss), as the \
         GPT-4 report fits its family of well-tuned runs; Kaplan's L(N) and L(D) on the lowest loss \
         at each model size and each data size; Chinchilla's L(N, D) on every run.",
    );
    if !fit.predictions.is_empty() {
        rep.heading("Predictions");
        let rows: Vec<Vec<String>> = fit
            .predictions
            .iter()
            .map(|p| {
                vec![
                    p.law.to_string(),
                    format!("{:.3e}", p.compute.unwrap_or(f64::NAN)),
                    p.n.map_or("-".into(), human),
                    p.d.map_or("-".into(), human),
                    format!("{:.4}", p.loss),
                    format!("[{:.4}, {:.4}]", p.interval[0], p.interval[1]),
                ]
            })
            .collect();
        rep.table(&["law", "compute", "N", "D", "predicted loss", "95% interval"], &rows);
    }
    rep.image("loss against compute", "loss_vs_compute.png");
    if let Some(f) = &fit.frontier {
        rep.heading("Compute-optimal frontier");
        rep.paragraph(&format!(
            "From the Chinchilla fit: N_opt = G·(C/6)^{:.3}, D_opt = (C/6)^{:.3}/G with G = {}.",
            f.law.n_exponent,
            f.law.d_exponent,
            sig(f.law.g)
        ));
        let rows: Vec<Vec<String>> = f
            .points
            .iter()
            .map(|p| {
                vec![format!("{:.2e}", p.compute), human(p.n_opt), human(p.d_opt), format!("{:.1}", p.tokens_per_param)]
            })
            .collect();
        rep.table(&["compute", "N_opt", "D_opt", "tokens per parameter"], &rows);
        rep.image("iso-FLOP curves", "isoflop.png");
        rep.image("compute-optimal model size", "n_opt.png");
        rep.image("residuals", "residuals.png");
    }
    if let Some(cap) = &fit.capability {
        rep.heading("Capability");
        rep.paragraph(&format!(
            "{}: alpha = {} [{}, {}], k = {} [{}, {}], where a problem's pass rate is the model's \
             probability of its answer (zero-shot, scored by the evaluation harness), averaged in log \
             over the held-out problems of the arithmetic families {}.",
            cap.formula,
            sig(cap.alpha),
            sig(cap.intervals["alpha"][0]),
            sig(cap.intervals["alpha"][1]),
            sig(cap.k),
            sig(cap.intervals["k"][0]),
            sig(cap.intervals["k"][1]),
            cap.families.join(", ")
        ));
        rep.image("capability law", "capability.png");
    } else if !input.results.is_empty() {
        rep.heading("Capability");
        rep.paragraph(
            "No capability law: fewer than 3 runs were scored on the arithmetic families (capability_problems = 0?).",
        );
    }
    rep.heading("Runs");
    let rows: Vec<Vec<String>> = input
        .rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                human(r.n_params),
                human(r.n_tokens),
                format!("{:.3e}", r.compute()),
                format!("{:.4}", r.loss),
            ]
        })
        .collect();
    rep.table(&["run", "N", "D", "C", "loss"], &rows);
    rep.write(&out.join("report.md"))
}
