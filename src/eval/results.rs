//! What an evaluation leaves behind, in lm-eval's shapes: `results.json` per (model, K) with its
//! exact keys (`results.<task>."acc,none"`, `"acc_stderr,none"`, `n-shot`, `configs`, `config`,
//! `git_hash`), `samples_<task>.jsonl` beside it, and a Markdown report whose plots put accuracy
//! against K, one line per model (GPT-3 figure 1.2's shape).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::harness::{calibration_pairs, RunOptions, TaskScore};
use super::metrics;
use super::task::Task;
use crate::plot::{BarChart, LinePlot, Series};
use crate::report::Report;

/// One line of `summary.jsonl`: a metric of a task for a model at K shots.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub model: String,
    pub k: usize,
    pub task: String,
    pub metric: String,
    pub value: f64,
    pub stderr: Option<f64>,
    pub k_used_mean: f64,
    pub n: usize,
}

/// The rows of a scored task, its headline metric first.
pub fn rows(model: &str, score: &TaskScore) -> Vec<Row> {
    score
        .metrics
        .iter()
        .map(|m| Row {
            model: model.to_string(),
            k: score.k,
            task: score.task.clone(),
            metric: if m.filter == "none" { m.name.clone() } else { format!("{},{}", m.name, m.filter) },
            value: m.value,
            stderr: m.stderr,
            k_used_mean: score.k_used_mean(),
            n: score.samples.len(),
        })
        .collect()
}

/// The source revision, as lm-eval records its own: `git describe` of the working directory.
fn git_hash() -> Option<String> {
    let out = std::process::Command::new("git").args(["describe", "--always"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// lm-eval's `results.json` for one model at one K.
pub fn results_json(
    model: &str,
    ckpt: &Path,
    k: usize,
    scores: &[TaskScore],
    tasks: &[&Task],
    opts: &RunOptions,
) -> Result<Value> {
    let mut results = Map::new();
    let mut configs = Map::new();
    let mut versions = Map::new();
    let mut n_shot = Map::new();
    let mut higher = Map::new();
    let mut n_samples = Map::new();
    let mut k_used = Map::new();
    for (score, task) in scores.iter().zip(tasks) {
        let name = score.task.clone();
        let mut entry = Map::new();
        entry.insert("alias".into(), json!(name));
        entry.insert("sample_len".into(), json!(score.samples.len()));
        let mut hib = Map::new();
        for m in &score.metrics {
            entry.insert(format!("{},{}", m.name, m.filter), json!(m.value));
            entry.insert(format!("{}_stderr,{}", m.name, m.filter), m.stderr.map_or(json!("N/A"), |s| json!(s)));
            hib.insert(m.name.clone(), json!(m.higher_is_better));
        }
        results.insert(name.clone(), Value::Object(entry));
        let mut cfg = serde_json::to_value(&task.cfg)?;
        cfg["num_fewshot"] = json!(k);
        configs.insert(name.clone(), cfg);
        versions.insert(name.clone(), task.cfg.version());
        n_shot.insert(name.clone(), json!(k));
        higher.insert(name.clone(), Value::Object(hib));
        n_samples.insert(name.clone(), json!({"original": score.original, "effective": score.samples.len()}));
        k_used.insert(name, json!(score.k_used_mean()));
    }
    Ok(json!({
        "results": results,
        "group_subtasks": scores.iter().map(|s| (s.task.clone(), json!([]))).collect::<Map<_, _>>(),
        "configs": configs,
        "versions": versions,
        "n-shot": n_shot,
        "higher_is_better": higher,
        "n-samples": n_samples,
        "k_used_mean": k_used,
        "config": {
            "model": "gptlab",
            "model_args": format!("ckpt={}", ckpt.display()),
            "model_name": model,
            "batch_size": opts.batch_size,
            "limit": opts.limit,
            "bootstrap_iters": super::metrics::BOOTSTRAP_ITERS,
            "random_seed": opts.seed,
            "fewshot_seed": opts.seed,
            "fewshot_sampler": "gptlab: per-document ChaCha8 draw, nested across K",
        },
        "git_hash": git_hash(),
        "gptlab_version": env!("CARGO_PKG_VERSION"),
        "date": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
    }))
}

/// Writes `results.json` and every `samples_<task>.jsonl` into `dir`.
pub fn write_run(dir: &Path, results: &Value, scores: &[TaskScore]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(results)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    for s in scores {
        crate::jsonl::write_jsonl(&dir.join(format!("samples_{}.jsonl", s.task)), &s.samples)?;
        if s.metric("ece").is_some() {
            let what = format!("{} at K = {}", s.task, s.k);
            reliability_diagram(&calibration_pairs(&s.samples), &what, &dir.join(format!("reliability_{}", s.task)))?;
        }
    }
    Ok(())
}

/// A reliability diagram of (confidence, right) pairs: per confidence bin, the share of answers
/// that were right beside the mean confidence they were given (equal on a calibrated model).
/// `what` names the task and setting in the title.
pub fn reliability_diagram(pairs: &[(f64, bool)], what: &str, stem: &Path) -> Result<()> {
    let bins = metrics::reliability(pairs, metrics::CALIBRATION_BINS);
    let ece = metrics::ece(pairs, metrics::CALIBRATION_BINS);
    BarChart {
        title: format!("{what}: ECE {ece:.3} (answers per bin)"),
        y_label: "share right / mean confidence".into(),
        categories: bins.iter().map(|b| format!("{:.1}+ ({})", b.lo, b.n)).collect(),
        groups: vec![
            ("accuracy".into(), bins.iter().map(|b| b.accuracy).collect()),
            ("confidence".into(), bins.iter().map(|b| b.confidence).collect()),
        ],
        y_max: 1.0,
    }
    .save(stem)
}

fn fmt(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.4}")
    }
}

/// `report.md`: the headline metric of every task by model (rows) and K (columns), each cell
/// with its standard error and the mean K used where it is lower than K; and a plot of it
/// against K per task, one line per model.
pub fn write_report(
    dir: &Path,
    rows: &[Row],
    headline: &BTreeMap<String, String>,
    steps: &BTreeMap<String, (f64, String)>,
) -> Result<()> {
    let mut report = Report::new("Few-shot evaluation");
    let models: Vec<String> = unique(rows.iter().map(|r| r.model.clone()));
    let ks: Vec<usize> = unique(rows.iter().map(|r| r.k));
    report.paragraph(&format!(
        "Models: {}. Each cell: the task's first metric ± its standard error over n documents; \
         where a document's prompt could not hold K shots in the context, fewer were used, and the \
         cell gives the mean K used in brackets.",
        models.join(", ")
    ));
    let mut header = vec!["task".to_string(), "metric".into(), "model".into(), "n".into()];
    header.extend(ks.iter().map(|k| format!("K={k}")));
    let mut table = Vec::new();
    for (task, metric) in headline {
        for model in &models {
            let cells: Vec<&Row> = ks
                .iter()
                .filter_map(|&k| {
                    rows.iter().find(|r| &r.task == task && &r.metric == metric && &r.model == model && r.k == k)
                })
                .collect();
            let Some(first) = cells.first() else { continue };
            let mut line = vec![task.clone(), metric.clone(), model.clone(), first.n.to_string()];
            line.extend(cells.iter().map(|r| {
                let mut cell = match r.stderr {
                    Some(s) => format!("{} ± {}", fmt(r.value), fmt(s)),
                    None => fmt(r.value),
                };
                if r.k_used_mean + 1e-9 < r.k as f64 {
                    cell.push_str(&format!(" ({:.1})", r.k_used_mean));
                }
                cell
            }));
            table.push(line);
        }
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    report.table(&header, &table);
    if ks.len() > 1 {
        report.heading("Against the number of examples in context");
        for (task, metric) in headline {
            let series: Vec<Series> = models
                .iter()
                .map(|m| {
                    let pts = rows
                        .iter()
                        .filter(|r| &r.model == m && &r.task == task && &r.metric == metric)
                        .map(|r| (r.k as f64, r.value))
                        .collect();
                    Series::line(m, pts)
                })
                .collect();
            let plot = LinePlot {
                title: format!("{task}: {metric} against K"),
                x_label: "examples in context (K)".into(),
                y_label: metric.clone(),
                series,
                log_x: false,
                log_y: false,
            };
            let stem = format!("k_{task}");
            plot.save(&dir.join(&stem))?;
            report.image(&format!("{task} against K"), &format!("{stem}.png"));
        }
    }
    if !steps.is_empty() {
        steps_section(&mut report, dir, rows, headline, steps)?;
    }
    report.write(&dir.join("report.md"))
}

/// Tasks that stand on a steps axis (`metadata.steps`): per K, a table and a plot of the headline
/// metric against steps, one line per model and series (direct against scratchpad answers).
fn steps_section(
    report: &mut Report,
    dir: &Path,
    rows: &[Row],
    headline: &BTreeMap<String, String>,
    steps: &BTreeMap<String, (f64, String)>,
) -> Result<()> {
    report.heading("Against the number of steps");
    let on_axis: Vec<&Row> =
        rows.iter().filter(|r| steps.contains_key(&r.task) && headline.get(&r.task) == Some(&r.metric)).collect();
    let mut xs: Vec<f64> = unique(steps.values().map(|s| s.0));
    xs.sort_by(f64::total_cmp);
    for k in unique(on_axis.iter().map(|r| r.k)) {
        let lines: Vec<(String, String)> =
            unique(on_axis.iter().filter(|r| r.k == k).map(|r| (r.model.clone(), steps[&r.task].1.clone())));
        let mut header = vec!["model".to_string(), "series".into()];
        header.extend(xs.iter().map(|x| format!("{x} steps")));
        let mut table = Vec::new();
        let mut series = Vec::new();
        for (model, name) in &lines {
            let at =
                |x: f64| on_axis.iter().find(|r| r.k == k && &r.model == model && steps[&r.task] == (x, name.clone()));
            let mut line = vec![model.clone(), name.clone()];
            line.extend(xs.iter().map(|&x| at(x).map_or("–".into(), |r| fmt(r.value))));
            table.push(line);
            series.push(Series::line(
                &format!("{model}, {name}"),
                xs.iter().filter_map(|&x| at(x).map(|r| (x, r.value))).collect(),
            ));
        }
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        report.paragraph(&format!("{k}-shot:"));
        report.table(&header, &table);
        let stem = format!("steps_{k}shot");
        LinePlot {
            title: format!("{k}-shot: accuracy against steps"),
            x_label: "steps".into(),
            y_label: "accuracy".into(),
            series,
            log_x: false,
            log_y: false,
        }
        .save(&dir.join(&stem))?;
        report.image(&format!("{k}-shot against steps"), &format!("{stem}.png"));
    }
    Ok(())
}

/// The distinct items, in first-seen order.
pub(crate) fn unique<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for x in items {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}
