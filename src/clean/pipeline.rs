//! `gptlab clean pipeline`: GPT-3's cleaning stages in its order (the quality filter, fuzzy
//! deduplication, then decontamination), each reading the previous stage's `kept.jsonl`, with
//! one Markdown report of what each stage kept and removed.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::decontaminate::{decontaminate, DecontaminateOptions, EvalNgrams};
use super::dedup::{dedup, DedupOptions};
use super::quality::{self, QualityModel, TrainOptions};
use super::records::read_texts;
use crate::report::Report;

/// The quality stage: a trained model, or curated positives to train one against the input.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualitySection {
    pub model: Option<PathBuf>,
    pub positives: Option<PathBuf>,
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_dims_log2")]
    pub dims_log2: u32,
}

fn default_alpha() -> f64 {
    9.0
}
fn default_dims_log2() -> u32 {
    TrainOptions::default().dims_log2
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupSection {
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    #[serde(default = "default_num_perm")]
    pub num_perm: usize,
    #[serde(default = "default_dedup_ngram")]
    pub ngram: usize,
    #[serde(default)]
    pub verify: bool,
}

fn default_threshold() -> f64 {
    DedupOptions::default().threshold
}
fn default_num_perm() -> usize {
    DedupOptions::default().num_perm
}
fn default_dedup_ngram() -> usize {
    DedupOptions::default().ngram
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecontaminateSection {
    /// Harness tasks: built-in names and lm-eval task files.
    pub tasks: Vec<String>,
}

/// A pipeline as its TOML file gives it; a stage whose section is absent is skipped.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub input: PathBuf,
    pub out_dir: PathBuf,
    #[serde(default = "default_field")]
    pub field: String,
    #[serde(default = "default_id_field")]
    pub id_field: String,
    pub quality: Option<QualitySection>,
    pub dedup: Option<DedupSection>,
    pub decontaminate: Option<DecontaminateSection>,
}

fn default_field() -> String {
    "text".into()
}
fn default_id_field() -> String {
    "id".into()
}

/// One stage's line in the report.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StageSummary {
    pub stage: String,
    pub documents_in: usize,
    pub documents_out: usize,
    pub removed: usize,
    pub dir: PathBuf,
}

/// Runs the configured stages in order and writes `report.md` and the resolved `pipeline.toml`
/// into `out_dir`.
pub fn run(cfg: &PipelineConfig) -> Result<Vec<StageSummary>> {
    ensure!(
        cfg.quality.is_some() || cfg.dedup.is_some() || cfg.decontaminate.is_some(),
        "the pipeline config has no stage: give [quality], [dedup] and/or [decontaminate]"
    );
    if let Some(q) = &cfg.quality {
        ensure!(
            q.model.is_some() != q.positives.is_some(),
            "[quality] needs exactly one of model (a trained classifier) or positives (curated text to train one)"
        );
    }
    // Load what the stages need before anything is written.
    let eval = match &cfg.decontaminate {
        Some(d) => Some(EvalNgrams::from_tasks(&d.tasks, DecontaminateOptions::default().ngram)?),
        None => None,
    };
    // The quality model: loaded, or trained on curated positives against the input.
    let model = match &cfg.quality {
        Some(QualitySection { model: Some(m), .. }) => Some((QualityModel::load(m)?, None)),
        Some(q @ QualitySection { positives: Some(pos), .. }) => {
            let (p, n) = (read_texts(pos, &cfg.field)?, read_texts(&cfg.input, &cfg.field)?);
            let opts = TrainOptions { dims_log2: q.dims_log2, seed: q.seed, ..TrainOptions::default() };
            let (p, n): (Vec<&str>, Vec<&str>) =
                (p.iter().map(String::as_str).collect(), n.iter().map(String::as_str).collect());
            let (m, r) = quality::train(&p, &n, &opts)?;
            Some((m, Some((r, opts))))
        }
        _ => None,
    };
    std::fs::create_dir_all(&cfg.out_dir).with_context(|| format!("creating {}", cfg.out_dir.display()))?;
    std::fs::write(cfg.out_dir.join("pipeline.toml"), toml::to_string(cfg)?)
        .with_context(|| format!("writing {}", cfg.out_dir.join("pipeline.toml").display()))?;
    let mut input = cfg.input.clone();
    let mut stages = Vec::new();
    let mut report = Report::new("Data cleaning");
    let summary = |stage: &str, dir: &Path, documents_in: usize, documents_out: usize, removed: usize| StageSummary {
        stage: stage.into(),
        documents_in,
        documents_out,
        removed,
        dir: dir.to_path_buf(),
    };
    if let Some(q) = &cfg.quality {
        let dir = cfg.out_dir.join("1-quality");
        let (model, trained) = model.as_ref().context("[quality] needs model or positives")?;
        if let Some((r, opts)) = trained {
            model.save(&dir.join("model"), r, opts)?;
        }
        let s = quality::filter(model, &input, &dir, &cfg.field, q.alpha, q.seed)?;
        stages.push(summary("quality filter", &dir, s.documents, s.kept, s.documents - s.kept));
        input = dir.join("kept.jsonl");
    }
    if let Some(d) = &cfg.dedup {
        let dir = cfg.out_dir.join("2-dedup");
        let opts = DedupOptions {
            threshold: d.threshold,
            num_perm: d.num_perm,
            ngram: d.ngram,
            field: cfg.field.clone(),
            id_field: cfg.id_field.clone(),
            verify: d.verify,
            ..DedupOptions::default()
        };
        let s = dedup(&input, &dir, &opts)?;
        stages.push(summary("near-duplicate removal", &dir, s.documents, s.kept, s.removed));
        input = dir.join("kept.jsonl");
    }
    if let Some(eval) = &eval {
        let dir = cfg.out_dir.join("3-decontaminate");
        let opts = DecontaminateOptions { field: cfg.field.clone(), ..DecontaminateOptions::default() };
        let s = decontaminate(&input, &dir, eval, &opts)?;
        stages.push(summary("decontamination", &dir, s.documents, s.clean + s.pieces, s.dropped));
    }
    report.paragraph(&format!(
        "Input: `{}`. Each stage reads the previous one's `kept.jsonl`; its folder holds `kept.jsonl`, \
         `removed.jsonl` and `stats.json`. Decontamination can keep more records than it reads: a record cut \
         by an overlap becomes its pieces.",
        cfg.input.display()
    ));
    let rows: Vec<Vec<String>> = stages
        .iter()
        .map(|s| {
            vec![
                s.stage.clone(),
                s.documents_in.to_string(),
                s.documents_out.to_string(),
                s.removed.to_string(),
                format!("`{}`", s.dir.strip_prefix(&cfg.out_dir).unwrap_or(&s.dir).display()),
            ]
        })
        .collect();
    report.table(&["stage", "records in", "records out", "removed", "folder"], &rows);
    if cfg.quality.is_some() {
        report.image("quality scores", "1-quality/scores.png");
    }
    report.heading("Examples of removed documents");
    for s in &stages {
        let removed = std::fs::read_to_string(s.dir.join("removed.jsonl"))?;
        let examples: Vec<String> = removed
            .lines()
            .take(3)
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                let text: String = v[&cfg.field].as_str().unwrap_or_default().chars().take(240).collect();
                let why = ["quality_score", "duplicate_of", "contaminated_by"]
                    .iter()
                    .find_map(|k| v.get(*k).map(|x| format!("{k} = {x}")))
                    .unwrap_or_default();
                format!("{why}: {}", text.replace('\n', " / "))
            })
            .collect();
        if !examples.is_empty() {
            report.paragraph(&format!("**{}**", s.stage));
            report.code(&examples.join("\n"));
        }
    }
    report.write(&cfg.out_dir.join("report.md"))?;
    Ok(stages)
}
