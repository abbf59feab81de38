//! GPT-4's predictable scaling as two commands: `scaling predict` fits a sweep and registers
//! the predicted final loss of a larger target run in `prediction.json` before the target
//! starts; `scaling check` compares the finished target with it.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::fit::FitOptions;
use super::report::{fit_and_report, plot_loss_vs_compute, FitInput};
use super::sweep::{plan, read_results, train_config, SweepConfig};
use crate::data::shards::ShardMeta;
use crate::report::Report;

/// `prediction.json`: what was predicted, from what, and when.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Registered {
    pub created_unix_s: u64,
    pub sweep: String,
    pub sweep_runs: usize,
    pub sweep_max_compute: f64,
    pub target: String,
    pub target_n_params: f64,
    pub target_n_tokens: f64,
    pub target_compute: f64,
    /// The fitted L(C) = a·C^b + c.
    pub law: serde_json::Value,
    pub predicted_loss: f64,
    pub interval: [f64; 2],
    /// Chinchilla's L(N, D) at the target's N and D, for comparison.
    pub chinchilla_loss: Option<f64>,
    /// GPT-4's capability prediction: the target's −mean log pass rate on the arithmetic
    /// families, from the capability law (absent when the sweep has no pass rates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<RegisteredCapability>,
}

/// The registered capability prediction.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisteredCapability {
    pub families: Vec<String>,
    pub alpha: f64,
    pub k: f64,
    /// −mean log pass rate predicted for the target.
    pub predicted: f64,
    pub interval: [f64; 2],
}

/// Fits the sweep in `runs`, predicts the single run of `target` and writes `out/prediction.json`
/// (never over an earlier one) with the fit's report beside it.
pub fn predict(runs: &Path, target: &Path, out: &Path, opts: &FitOptions) -> Result<Registered> {
    let file = out.join("prediction.json");
    ensure!(!file.exists(), "{} exists: a registered prediction is never replaced", file.display());
    let cfg = SweepConfig::from_file(target)?;
    let planned = plan(&cfg)?;
    let [run] = planned.as_slice() else {
        bail!("{}: the target sweep must hold exactly one run, not {}", target.display(), planned.len())
    };
    let input = FitInput::load(Some(runs), None)?;
    // The target's model as it will be built: its vocab comes from the sweep's tokenizer.
    let sweep_cfg = SweepConfig::from_file(&runs.join("sweep.toml"))?;
    let shards = sweep_cfg.shard_dir(runs);
    let meta = ShardMeta::read(&shards)?;
    let gpt = train_config(&cfg, run, &shards, out.to_path_buf()).model.resolve(meta.vocab_size)?;
    let n = gpt.param_counts().total as f64;
    let d = (run.steps * cfg.train.batch_size as u64 * cfg.grid.block_size as u64) as f64;
    let c = 6.0 * n * d;
    let opts = FitOptions { predict_compute: vec![c], predict_nd: Some((n, d)), ..opts.clone() };
    let fit = fit_and_report(&input, &opts, out)?;
    let law = fit.laws.get("compute").and_then(|l| l.fitted()).context("L(C) did not converge: no prediction")?;
    let p = fit.predictions.iter().find(|p| p.law == "compute").context("no L(C) prediction")?;
    let reg = Registered {
        created_unix_s: SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
        sweep: runs.display().to_string(),
        sweep_runs: input.rows.len(),
        sweep_max_compute: input.rows.iter().map(|r| r.compute()).fold(0.0, f64::max),
        target: run.name.clone(),
        target_n_params: n,
        target_n_tokens: d,
        target_compute: c,
        law: serde_json::to_value(&law.params)?,
        predicted_loss: p.loss,
        interval: p.interval,
        chinchilla_loss: fit.predictions.iter().find(|p| p.law == "chinchilla").map(|p| p.loss),
        capability: fit.capability.as_ref().and_then(|cap| {
            let p = fit.predictions.iter().find(|p| p.law == "capability")?;
            Some(RegisteredCapability {
                families: cap.families.clone(),
                alpha: cap.alpha,
                k: cap.k,
                predicted: p.loss,
                interval: p.interval,
            })
        }),
    };
    // The table the fit saw, beside it (notebooks/scaling_laws.ipynb reads the pair).
    std::fs::copy(runs.join("runs.csv"), out.join("runs.csv")).context("copying the sweep's runs.csv")?;
    std::fs::write(&file, serde_json::to_string_pretty(&reg)?)?;
    Ok(reg)
}

/// The outcome: the target's actual loss against the registered prediction.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub predicted_loss: f64,
    pub interval: [f64; 2],
    pub actual_loss: f64,
    pub relative_error: f64,
    pub inside_interval: bool,
    /// Target compute over the largest sweep run's.
    pub compute_ratio: f64,
    pub actual_compute: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capability: Option<CapabilityOutcome>,
}

/// The target's −mean log pass rate against the registered prediction.
#[derive(Debug, Serialize)]
pub struct CapabilityOutcome {
    pub predicted: f64,
    pub interval: [f64; 2],
    pub actual: f64,
    pub relative_error: f64,
    pub inside_interval: bool,
}

/// Reads `prediction.json` and the target sweep's result, writes `outcome.json`, `outcome.md`
/// and the loss-against-compute plot with the actual run marked, beside the prediction.
pub fn check(prediction: &Path, target_runs: &Path) -> Result<Outcome> {
    let text = std::fs::read_to_string(prediction).with_context(|| format!("reading {}", prediction.display()))?;
    let reg: Registered = serde_json::from_str(&text).with_context(|| format!("parsing {}", prediction.display()))?;
    let results = read_results(&target_runs.join("runs.jsonl"))?;
    let target = results
        .iter()
        .find(|r| r.row.name == reg.target)
        .with_context(|| format!("no run {} in {}", reg.target, target_runs.display()))?;
    let actual = target.row.loss;
    let capability = match &reg.capability {
        Some(cap) => {
            let logs: Vec<f64> = cap
                .families
                .iter()
                .map(|f| {
                    target.log_pass_rates.get(f).copied().with_context(|| {
                        format!("the target was not scored on arithmetic family {f} (capability_problems = 0?)")
                    })
                })
                .collect::<Result<_>>()?;
            let y = -logs.iter().sum::<f64>() / logs.len() as f64;
            Some(CapabilityOutcome {
                predicted: cap.predicted,
                interval: cap.interval,
                actual: y,
                relative_error: (y - cap.predicted) / y,
                inside_interval: (cap.interval[0]..=cap.interval[1]).contains(&y),
            })
        }
        None => None,
    };
    let outcome = Outcome {
        predicted_loss: reg.predicted_loss,
        interval: reg.interval,
        actual_loss: actual,
        relative_error: (actual - reg.predicted_loss) / actual,
        inside_interval: (reg.interval[0]..=reg.interval[1]).contains(&actual),
        compute_ratio: target.row.compute() / reg.sweep_max_compute,
        actual_compute: target.row.compute(),
        capability,
    };
    let dir = prediction.parent().unwrap_or(Path::new("."));
    std::fs::write(dir.join("outcome.json"), serde_json::to_string_pretty(&outcome)?)?;
    let sweep = FitInput::load(Some(Path::new(&reg.sweep)), None)?;
    let fit: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("fit.json"))?)?;
    let theta = law_theta(&fit)?;
    plot_loss_vs_compute(
        &sweep.rows,
        &theta,
        &[(reg.target_compute, reg.predicted_loss, reg.interval)],
        Some((outcome.actual_compute, actual)),
        &dir.join("outcome"),
    )?;

    let mut rep = Report::new("Predictable scaling: prediction against outcome");
    rep.paragraph(&format!(
        "The prediction was registered at unix time {} from {} sweep runs, before the target run \
         started. The target {} used {:.1}× the compute of the largest sweep run.",
        reg.created_unix_s, reg.sweep_runs, reg.target, outcome.compute_ratio
    ));
    rep.table(
        &["predicted loss", "95% interval", "actual loss", "relative error", "inside the interval"],
        &[vec![
            format!("{:.4}", reg.predicted_loss),
            format!("[{:.4}, {:.4}]", reg.interval[0], reg.interval[1]),
            format!("{actual:.4}"),
            format!("{:+.2}%", 100.0 * outcome.relative_error),
            if outcome.inside_interval { "yes" } else { "no" }.to_string(),
        ]],
    );
    rep.image("sweep, fit, prediction and the actual target", "outcome.png");
    if let Some(c) = &outcome.capability {
        rep.heading("Capability");
        rep.paragraph(
            "GPT-4's capability prediction: the target's −mean log pass rate on the held-out arithmetic \
             problems (a problem's pass rate is the model's probability of its answer, zero-shot), from \
             the capability law fitted to the sweep and registered with the loss prediction. exp(−x) is \
             the geometric-mean probability of a right answer.",
        );
        rep.table(
            &[
                "predicted",
                "95% interval",
                "actual",
                "relative error",
                "inside the interval",
                "geometric-mean pass rate (predicted → actual)",
            ],
            &[vec![
                format!("{:.4}", c.predicted),
                format!("[{:.4}, {:.4}]", c.interval[0], c.interval[1]),
                format!("{:.4}", c.actual),
                format!("{:+.2}%", 100.0 * c.relative_error),
                if c.inside_interval { "yes" } else { "no" }.to_string(),
                format!("{:.4} → {:.4}", (-c.predicted).exp(), (-c.actual).exp()),
            ]],
        );
    }
    rep.paragraph("The fit itself, with the iso-FLOP curves and the frontier, is in [report.md](report.md).");
    rep.write(&dir.join("outcome.md"))?;
    Ok(outcome)
}

/// θ of the L(C) law in fit.json's natural parameters (a, b, c) → the log-space form.
fn law_theta(fit: &serde_json::Value) -> Result<Vec<f64>> {
    let p = &fit["laws"]["compute"]["params"];
    let get = |k: &str| p[k].as_f64().with_context(|| format!("fit.json: no compute.{k}"));
    Ok(vec![get("c")?.ln(), get("a")?.ln(), -get("b")?])
}
