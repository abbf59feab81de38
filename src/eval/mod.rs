//! Few-shot evaluation with lm-evaluation-harness's semantics: task files in its YAML
//! ([`task`]), the tasks of the embedded world ([`builtin`]), prompts and scoring ([`harness`])
//! on one path for every checkpoint ([`model`]), its metrics ([`metrics`]), and results in its
//! shapes ([`results`]).

pub mod builtin;
pub mod harness;
pub mod metrics;
pub mod model;
pub mod results;
pub mod task;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::checkpoint::{commit_replacing, is_empty_dir, temp_sibling};
use harness::RunOptions;
use model::EvalModel;
use results::Row;

/// A task by built-in name, or from a task file (a path ending in `.yaml` or `.yml`).
pub fn load_task(spec: &str) -> Result<task::Task> {
    if spec.ends_with(".yaml") || spec.ends_with(".yml") {
        task::Task::from_file(Path::new(spec))
    } else {
        builtin::load(spec)
    }
}

/// An evaluation: checkpoints x tasks x shot counts; `eval.toml` in the output records it.
#[derive(Clone, Debug, Serialize)]
pub struct EvalSpec {
    pub ckpts: Vec<PathBuf>,
    pub tasks: Vec<String>,
    pub shots: Vec<usize>,
    pub options: RunOptions,
}

/// Files every evaluation output directory has: what may be replaced by a new one.
const SPEC_FILE: &str = "eval.toml";
const SUMMARY_FILE: &str = "summary.jsonl";

fn is_eval_output(dir: &Path) -> bool {
    dir.join(SPEC_FILE).is_file() && dir.join(SUMMARY_FILE).is_file()
}

/// Runs `spec` and writes `out`: `<model>/<K>shot/{results.json, samples_<task>.jsonl}`,
/// `results.json` at the top for one model at one K, `summary.jsonl`, `eval.toml` and
/// `report.md` with its plots. Everything is checked (tasks, checkpoints, shot counts) before
/// the first document is scored, and `out` appears only when all is written.
pub fn run(spec: &EvalSpec, out: &Path, device: tch::Device) -> Result<Vec<Row>> {
    ensure!(!spec.ckpts.is_empty(), "give at least one --ckpt");
    ensure!(!spec.tasks.is_empty(), "give at least one task (--tasks)");
    ensure!(!spec.shots.is_empty(), "give at least one shot count (--shots)");
    ensure!(spec.options.batch_size > 0, "--batch-size must be at least 1");
    ensure!(spec.options.limit != Some(0), "--limit must be at least 1");
    if out.exists() {
        ensure!(
            is_empty_dir(out) || is_eval_output(out),
            "refusing to replace {}: it exists and is not a gptlab evaluation",
            out.display()
        );
    }
    let tasks: Vec<task::Task> = spec.tasks.iter().map(|t| load_task(t)).collect::<Result<_>>()?;
    let mut names = Vec::new();
    for t in &tasks {
        ensure!(!names.contains(&t.name()), "task {} is given twice", t.name());
        names.push(t.name());
    }
    let mut models = Vec::new();
    for ckpt in &spec.ckpts {
        let mut m = EvalModel::load(ckpt, device)?;
        let base = m.name.clone();
        let mut n = 2;
        while models.iter().any(|o: &EvalModel| o.name == m.name) {
            m.name = format!("{base}-{n}");
            n += 1;
        }
        models.push(m);
    }
    for m in &models {
        for t in &tasks {
            for &k in &spec.shots {
                harness::check(t, m, k)?;
            }
        }
    }
    let tmp = temp_sibling(out);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let written = write_all(spec, &tasks, &models, &tmp);
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let rows = written?;
    commit_replacing(&tmp, out, is_eval_output, "a gptlab evaluation")?;
    Ok(rows)
}

fn write_all(spec: &EvalSpec, tasks: &[task::Task], models: &[EvalModel], dir: &Path) -> Result<Vec<Row>> {
    let spec_text = toml::to_string(spec).context("serialising the evaluation settings")?;
    std::fs::write(dir.join(SPEC_FILE), spec_text)?;
    let mut rows = Vec::new();
    let mut headline = BTreeMap::new();
    let task_refs: Vec<&task::Task> = tasks.iter().collect();
    for m in models {
        for &k in &spec.shots {
            let bar = ProgressBar::new(0).with_message(format!("{} {k}-shot", m.name));
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} requests ({elapsed})")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            let mut scores = Vec::new();
            for t in tasks {
                let score = harness::evaluate(m, t, k, &spec.options, &bar)?;
                let lead = score.headline();
                let key =
                    if lead.filter == "none" { lead.name.clone() } else { format!("{},{}", lead.name, lead.filter) };
                headline.entry(score.task.clone()).or_insert(key);
                rows.extend(results::rows(&m.name, &score));
                scores.push(score);
            }
            bar.finish_and_clear();
            let results = results::results_json(&m.name, &m.dir, k, &scores, &task_refs, &spec.options)?;
            results::write_run(&dir.join(&m.name).join(format!("{k}shot")), &results, &scores)?;
            if models.len() == 1 && spec.shots.len() == 1 {
                std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(&results)? + "\n")?;
            }
        }
    }
    crate::jsonl::write_jsonl(&dir.join(SUMMARY_FILE), &rows)?;
    let steps = tasks.iter().filter_map(|t| t.cfg.steps().map(|s| (t.cfg.task.clone(), s))).collect();
    results::write_report(dir, &rows, &headline, &steps)?;
    Ok(rows)
}
