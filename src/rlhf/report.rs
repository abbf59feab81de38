//! `gptlab rlhf report`: InstructGPT's figures from the outputs of the other stages, in one
//! Markdown report with its plots:
//! - the labeler's verdict (`rlhf compare`): each model's shares and its win rate against a
//!   baseline (the SFT model), as in the paper's Figure 1;
//! - PPO's runs (their `metrics.jsonl`): reward against KL, and the held-out LM loss over
//!   training, the regression the pretraining mix is there to reduce;
//! - the harness (`gptlab eval`'s `summary.jsonl`): few-shot scores and calibration (ECE)
//!   before and after RLHF.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use super::compare::Comparison;
use crate::eval::results::unique;
use crate::plot::{BarChart, LinePlot, Series};
use crate::report::Report;

/// Where the report's inputs are.
#[derive(Clone, Debug)]
pub struct ReportInputs {
    /// An `rlhf compare` output folder (its `compare.json`).
    pub compare: PathBuf,
    /// The model win rates are taken against (default: the first one compared).
    pub baseline: Option<String>,
    /// PPO run folders (each with `metrics.jsonl`).
    pub ppo: Vec<PathBuf>,
    /// A `gptlab eval` output folder (its `summary.jsonl`), optional.
    pub eval: Option<PathBuf>,
}

/// Each model's win rate against the baseline, the report's headline.
#[derive(Clone, Debug, PartialEq)]
pub struct Headline {
    pub baseline: String,
    pub win_rates: Vec<(String, f64)>,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// An `rlhf compare` result, checked for shape.
fn read_compare(dir: &Path) -> Result<Comparison> {
    let path = dir.join("compare.json");
    let bad = || format!("{} is not an `rlhf compare` result", path.display());
    let c: Comparison = serde_json::from_value(read_json(&path)?).with_context(bad)?;
    let n = c.models.len();
    ensure!(n >= 2 && c.win_rate.len() == n && c.win_rate.iter().all(|r| r.len() == n), "{}", bad());
    Ok(c)
}

/// A PPO run's per-iteration metrics: (step, reward, kl, val_loss, val_reward).
fn read_ppo(run: &Path) -> Result<Vec<[f64; 5]>> {
    let path = run.join("metrics.jsonl");
    let records = crate::jsonl::read_jsonl(&path)?;
    let rows: Vec<[f64; 5]> = records
        .iter()
        .filter_map(|r| {
            let f = |k: &str| r[k].as_f64();
            Some([f("step")?, f("reward")?, f("kl")?, f("val_loss")?, f("val_reward")?])
        })
        .collect();
    ensure!(!rows.is_empty(), "{} holds no PPO iterations (reward, kl, val_loss)", path.display());
    Ok(rows)
}

/// Iterations the reward-against-KL path is averaged over.
const SMOOTH: usize = 5;

/// Each point replaced by the mean of it and the up to `w - 1` points before it.
fn trailing_mean(points: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    (0..points.len())
        .map(|i| {
            let window = &points[i.saturating_sub(w - 1)..=i];
            let n = window.len() as f64;
            (window.iter().map(|p| p.0).sum::<f64>() / n, window.iter().map(|p| p.1).sum::<f64>() / n)
        })
        .collect()
}

fn run_name(run: &Path) -> String {
    let name = run.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if name == "checkpoint" {
        return run.parent().map_or(name.clone(), run_name);
    }
    name
}

/// Writes `rlhf.md` and its plots into `out`; returns the win rates against the baseline.
pub fn report(inputs: &ReportInputs, out: &Path) -> Result<Headline> {
    let Comparison { models, win_rate: win, .. } = read_compare(&inputs.compare)?;
    let base = match &inputs.baseline {
        Some(b) => models.iter().position(|m| &m.model == b).with_context(|| {
            let names: Vec<&str> = models.iter().map(|m| m.model.as_str()).collect();
            format!("baseline {b} is not among the compared models ({})", names.join(", "))
        })?,
        None => 0,
    };
    let runs: Vec<(String, Vec<[f64; 5]>)> =
        inputs.ppo.iter().map(|r| Ok((run_name(r), read_ppo(r)?))).collect::<Result<_>>()?;
    let summary = match &inputs.eval {
        Some(dir) => {
            let rows = crate::jsonl::read_jsonl(&dir.join("summary.jsonl"))?;
            ensure!(!rows.is_empty(), "{} holds no scores", dir.join("summary.jsonl").display());
            rows
        }
        None => Vec::new(),
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let baseline = models[base].model.clone();
    let mut report = Report::new("InstructGPT, in miniature");

    report.heading("The labeler's verdict");
    report.paragraph(&format!(
        "Greedy answers to the held-out prompts, judged by the labeler: the share that is safe (refuses \
         exactly the unsafe requests), correct, in the asked-for format and within the length budget, the \
         mean length, and how often each model's answer is preferred to {baseline}'s (a tie counts half)."
    ));
    let rows: Vec<Vec<String>> = models
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut r = vec![m.model.clone()];
            r.extend([m.safe, m.correct, m.format, m.within_budget].iter().map(|x| format!("{x:.3}")));
            r.push(format!("{:.1}", m.mean_chars));
            r.push(if i == base { "–".into() } else { format!("{:.3}", win[i][base]) });
            r
        })
        .collect();
    let vs = format!("preferred to {baseline}");
    report.table(&["model", "safe", "correct", "format", "within budget", "chars", &vs], &rows);
    let names: Vec<String> = models.iter().map(|m| m.model.clone()).collect();
    let mut header = vec!["preferred to →".to_string()];
    header.extend(names.iter().cloned());
    let matrix: Vec<Vec<String>> = names
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut r = vec![m.clone()];
            r.extend((0..names.len()).map(|j| if i == j { "–".into() } else { format!("{:.3}", win[i][j]) }));
            r
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    report.table(&header, &matrix);
    let others: Vec<usize> = (0..models.len()).filter(|&i| i != base).collect();
    BarChart {
        title: format!("the labeler's preference against {baseline}"),
        y_label: format!("win rate against {baseline}"),
        categories: others.iter().map(|&i| names[i].clone()).collect(),
        groups: vec![("win rate".into(), others.iter().map(|&i| win[i][base]).collect())],
        y_max: 1.0,
    }
    .save(&out.join("win_rates"))?;
    report.image("win rates", "win_rates.png");

    if !runs.is_empty() {
        report.heading("PPO: reward, KL and the held-out LM loss");
        report.paragraph(
            "Per iteration: the reward model's mean score of the rollouts against their mean KL to the SFT \
             model (summed over a response's tokens), and the LM loss on held-out pretraining text, whose rise \
             is the alignment tax the pretraining mix (PPO-ptx) is there to reduce.",
        );
        let rows: Vec<Vec<String>> = runs
            .iter()
            .map(|(name, m)| {
                let (a, z) = (m[0], m[m.len() - 1]);
                vec![
                    name.clone(),
                    format!("{}", m.len()),
                    format!("{:.3} → {:.3}", a[1], z[1]),
                    format!("{:.3} → {:.3}", a[2], z[2]),
                    format!("{:.3} → {:.3}", a[4], z[4]),
                    format!("{:.4} → {:.4}", a[3], z[3]),
                ]
            })
            .collect();
        report.table(&["run", "iterations", "reward", "KL", "held-out reward (greedy)", "held-out LM loss"], &rows);
        let series = |x: usize, y: usize| -> Vec<Series> {
            runs.iter().map(|(n, m)| Series::line(n, m.iter().map(|r| (r[x], r[y])).collect())).collect()
        };
        // One iteration's reward and KL are means over a few dozen rollouts: a trailing mean
        // over SMOOTH iterations shows the path through them.
        let smoothed: Vec<Series> = runs
            .iter()
            .map(|(n, m)| Series::line(n, trailing_mean(&m.iter().map(|r| (r[2], r[1])).collect::<Vec<_>>(), SMOOTH)))
            .collect();
        let plot = |title: &str, x_label: &str, y_label: &str, series: Vec<Series>, stem: &str| {
            LinePlot {
                title: title.into(),
                x_label: x_label.into(),
                y_label: y_label.into(),
                series,
                log_x: false,
                log_y: false,
            }
            .save(&out.join(stem))
        };
        plot(
            &format!("reward against KL over training (trailing mean of {SMOOTH} iterations)"),
            "KL to the SFT model (nats per response)",
            "reward",
            smoothed,
            "reward_vs_kl",
        )?;
        report.image("reward against KL", "reward_vs_kl.png");
        plot("held-out LM loss during PPO", "step", "held-out LM loss", series(0, 3), "lm_loss")?;
        report.image("held-out LM loss", "lm_loss.png");
        plot("held-out reward (greedy answers)", "step", "reward", series(0, 4), "val_reward")?;
        report.image("held-out reward", "val_reward.png");
    }

    if !summary.is_empty() {
        report.heading("The harness, before and after");
        report.paragraph(
            "`gptlab eval` on each model: few-shot scores, the held-out language-modelling perplexity, and the \
             calibration of multiple-choice answers (expected calibration error, lower is better; the GPT-4 \
             report found RLHF worsens it).",
        );
        let field = |r: &Value, k: &str| r[k].as_str().map(str::to_string);
        let eval_models = unique(summary.iter().filter_map(|r| field(r, "model")));
        let keys =
            unique(summary.iter().filter_map(|r| Some((field(r, "task")?, r["k"].as_u64()?, field(r, "metric")?))));
        let mut header = vec!["task".to_string(), "K".into(), "metric".into()];
        header.extend(eval_models.iter().cloned());
        let rows: Vec<Vec<String>> = keys
            .iter()
            .map(|(task, k, metric)| {
                let mut row = vec![task.clone(), k.to_string(), metric.clone()];
                row.extend(eval_models.iter().map(|m| {
                    summary
                        .iter()
                        .find(|r| {
                            field(r, "model").as_ref() == Some(m)
                                && field(r, "task").as_ref() == Some(task)
                                && r["k"].as_u64() == Some(*k)
                                && field(r, "metric").as_ref() == Some(metric)
                        })
                        .and_then(|r| r["value"].as_f64())
                        .map_or("–".into(), |v| format!("{v:.3}"))
                }));
                row
            })
            .collect();
        if rows.is_empty() {
            bail!(
                "{} holds no (model, task, k, metric) scores",
                inputs.eval.as_ref().map_or(String::new(), |d| d.display().to_string())
            );
        }
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        report.table(&header, &rows);
    }
    report.write(&out.join("rlhf.md"))?;
    let win_rates = others.iter().map(|&i| (names[i].clone(), win[i][base])).collect();
    Ok(Headline { baseline, win_rates })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trailing_mean_averages_what_came_before() {
        let p = [(0.0, 1.0), (2.0, 3.0), (4.0, 8.0)];
        assert_eq!(trailing_mean(&p, 2), vec![(0.0, 1.0), (1.0, 2.0), (3.0, 5.5)]);
        assert_eq!(trailing_mean(&p, 1), p.to_vec());
    }
}
