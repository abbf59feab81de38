//! `gptlab paradigms`: the GPT series' three paradigms side by side, from their results files.
//!
//! Every result is lm-eval-shaped JSON, and each says which paradigm made it:
//! - `gptlab finetune` with one task: GPT-1's paradigm, a fine-tuned model per task
//!   (`config.labelled_examples`, `config.params_trained`, `config.lm_coef`);
//! - `gptlab finetune` with several tasks: one multitask model told the task by a token;
//! - `gptlab eval` (`n-shot`): the pretrained model prompted with K labelled examples (GPT-2/3).
//!
//! The report puts accuracy beside parameters trained, labelled examples used and models kept,
//! and plots accuracy against labelled examples per task (fine-tuning's N against prompting's K).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::eval::results::unique;
use crate::plot::{LinePlot, Series};
use crate::report::Report;

/// One task's accuracy under one paradigm setting.
#[derive(Clone, Debug, Serialize)]
pub struct ParadigmRow {
    /// "fine-tuned", "fine-tuned, no LM loss", "multitask", or "prompted" (with the model's name
    /// when an evaluation scored several).
    pub paradigm: String,
    pub task: String,
    /// Labelled examples of this task the paradigm used: training records, or shots (K).
    pub examples: usize,
    pub acc: f64,
    pub stderr: Option<f64>,
    /// Parameters changed by training for this setting (0 for prompting).
    pub params_trained: i64,
    pub source: PathBuf,
}

/// Finds the `results.json` files under `path` (a file, a fine-tuning run or an eval output).
fn result_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    if !path.is_dir() {
        bail!("{} does not exist", path.display());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            result_files(&e, out)?;
        } else if e.file_name().is_some_and(|n| n == "results.json") {
            out.push(e);
        }
    }
    Ok(())
}

/// The rows of one results file.
fn rows_of(path: &Path) -> Result<Vec<ParadigmRow>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let results = v.get("results").and_then(Value::as_object).with_context(|| {
        format!("{} is not a results file (no \"results\"): give gptlab finetune or gptlab eval output", path.display())
    })?;
    let cfg = &v["config"];
    let finetuned = cfg["model"] == "gptlab-finetuned";
    let n_tasks = results.len().max(1);
    let mut rows = Vec::new();
    for (task, r) in results {
        let Some(acc) = r.get("acc,none").and_then(Value::as_f64) else { continue };
        let stderr = r.get("acc_stderr,none").and_then(Value::as_f64);
        let (paradigm, examples, params) = if finetuned {
            let labelled = cfg["labelled_examples"].as_u64().unwrap_or(0) as usize;
            let paradigm = match (n_tasks > 1, cfg["lm_coef"].as_f64().unwrap_or(0.0) > 0.0) {
                (true, _) => "multitask",
                (false, true) => "fine-tuned",
                (false, false) => "fine-tuned, no LM loss",
            };
            (paradigm.to_string(), labelled / n_tasks, cfg["params_trained"].as_i64().unwrap_or(0))
        } else {
            let k = v["n-shot"][task].as_u64().with_context(|| format!("{}: no n-shot for {task}", path.display()))?;
            let paradigm = match cfg["model_name"].as_str() {
                Some(m) if !m.is_empty() => format!("prompted ({m})"),
                _ => "prompted".to_string(),
            };
            (paradigm, k as usize, 0)
        };
        rows.push(ParadigmRow {
            paradigm,
            task: task.clone(),
            examples,
            acc,
            stderr,
            params_trained: params,
            source: path.to_path_buf(),
        });
    }
    Ok(rows)
}

/// Reads every result under `inputs`, writes `paradigms.md`, `paradigms.jsonl` and the plots
/// into `out`, and returns the rows.
pub fn report(inputs: &[PathBuf], out: &Path) -> Result<Vec<ParadigmRow>> {
    let mut files = Vec::new();
    for i in inputs {
        result_files(i, &mut files)?;
    }
    let mut rows = Vec::new();
    for f in &files {
        rows.extend(rows_of(f)?);
    }
    if rows.is_empty() {
        bail!(
            "no accuracy results found under {}",
            inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    crate::jsonl::write_jsonl(&out.join("paradigms.jsonl"), &rows)?;
    let tasks: Vec<String> = unique(rows.iter().map(|r| r.task.clone()));
    // Settings: (paradigm, examples per task), in the order fine-tuning, multitask, prompting.
    let order = |p: &str| {
        ["fine-tuned", "fine-tuned, no LM loss", "multitask", "prompted"]
            .iter()
            .position(|x| p == *x || p.starts_with(&format!("{x} (")))
    };
    let mut settings: Vec<(String, usize)> = unique(rows.iter().map(|r| (r.paradigm.clone(), r.examples)));
    settings.sort_by_key(|(p, n)| (order(p), *n));
    let mut header: Vec<String> = vec!["paradigm".into(), "labelled examples per task".into()];
    header.extend(tasks.iter().cloned());
    header.extend(["mean".into(), "parameters trained".into(), "labelled examples used".into(), "models kept".into()]);
    let mut table = Vec::new();
    let mut means: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (paradigm, n) in &settings {
        let cells: Vec<Option<&ParadigmRow>> = tasks
            .iter()
            .map(|t| rows.iter().find(|r| &r.paradigm == paradigm && r.examples == *n && &r.task == t))
            .collect();
        let found: Vec<&ParadigmRow> = cells.iter().flatten().copied().collect();
        let mean = found.iter().map(|r| r.acc).sum::<f64>() / found.len().max(1) as f64;
        if found.len() == tasks.len() {
            means.entry(paradigm.clone()).or_default().push((*n as f64, mean));
        }
        let (params, used, kept) = match paradigm.as_str() {
            "multitask" => {
                (found.first().map_or(0, |r| r.params_trained), (n * found.len()).to_string(), "1".to_string())
            }
            p if p.starts_with("prompted") => {
                (0, format!("{n} per prompt"), "1 (the pretrained model, unchanged)".to_string())
            }
            _ => (
                found.iter().map(|r| r.params_trained).sum(),
                (n * found.len()).to_string(),
                format!("{} (one per task)", found.len()),
            ),
        };
        let mut line =
            vec![paradigm.clone(), if paradigm.starts_with("prompted") { format!("K = {n}") } else { n.to_string() }];
        line.extend(cells.iter().map(|c| match c {
            Some(r) => match r.stderr {
                Some(s) => format!("{:.3} ± {:.3}", r.acc, s),
                None => format!("{:.3}", r.acc),
            },
            None => "–".into(),
        }));
        line.extend([format!("{mean:.3}"), crate::plot::human(params as f64), used, kept]);
        table.push(line);
    }
    let mut report = Report::new("The GPT series' three paradigms, side by side");
    report.paragraph(
        "Each cell: accuracy ± its standard error on the task's held-out records. Fine-tuned: GPT-1, a model \
         per task trained on N labelled records. Multitask: one model for all tasks, told the task by a token. \
         Prompted: the pretrained model with K labelled examples in its context (GPT-2/3); \"labelled \
         examples used\" counts those a prompt shows. Parameters trained add up over the models kept.",
    );
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    report.table(&header, &table);
    let plot = |title: &str, series: Vec<Series>, stem: &str| -> Result<()> {
        LinePlot {
            title: title.into(),
            x_label: "labelled examples per task (fine-tuning: N records; prompting: K shots)".into(),
            y_label: "accuracy".into(),
            series,
            log_x: true,
            log_y: false,
        }
        .save(&out.join(stem))
    };
    let paradigms: Vec<String> = unique(settings.iter().map(|(p, _)| p.clone()));
    let series_for = |points: &dyn Fn(&str) -> Vec<(f64, f64)>| -> Vec<Series> {
        let mut series = Vec::new();
        for p in &paradigms {
            let p = p.as_str();
            let mut pts = points(p);
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            // A log axis has no 0: the 0-shot score is drawn as a level across the plot.
            let zero: Vec<f64> = pts.iter().filter(|q| q.0 == 0.0).map(|q| q.1).collect();
            pts.retain(|q| q.0 > 0.0);
            if let Some(&z) = zero.first() {
                let span = rows.iter().map(|r| r.examples.max(1) as f64);
                let (lo, hi) = span.fold((f64::MAX, 1.0f64), |(a, b), x| (a.min(x), b.max(x)));
                series.push(Series::line(&format!("{p}, 0-shot"), vec![(lo, z), (hi, z)]));
            }
            match (p, pts.len()) {
                (_, 0) => {}
                ("multitask", _) | (_, 1) => series.push(Series::dots(p, pts)),
                _ => series.push(Series::line(p, pts)),
            }
        }
        series
    };
    report.heading("Accuracy against labelled examples");
    // The mean needs a setting with every task; results on disjoint tasks get per-task plots only.
    if !means.is_empty() {
        let mean = |p: &str| means.get(p).cloned().unwrap_or_default();
        plot("mean accuracy over the tasks", series_for(&mean), "accuracy_vs_examples")?;
        report.image("mean accuracy", "accuracy_vs_examples.png");
    }
    for task in &tasks {
        let pts = |p: &str| {
            rows.iter().filter(|r| r.paradigm == p && &r.task == task).map(|r| (r.examples as f64, r.acc)).collect()
        };
        let stem = format!("accuracy_vs_examples_{task}");
        plot(task, series_for(&pts), &stem)?;
        report.image(task, &format!("{stem}.png"));
    }
    report.write(&out.join("paradigms.md"))?;
    Ok(rows)
}
