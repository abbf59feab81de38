//! Scaling laws, as GPT-4's report used them: train a family of models (`sweep`), fit the laws
//! of Kaplan et al. (2020), Hoffmann et al. (2022, "Chinchilla", approach 3) and the GPT-4
//! report with bootstrap intervals (`fit`), register a prediction, and plot it all (`report`).

pub mod fit;
pub mod predict;
pub mod report;
pub mod sweep;

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// One finished training run: a row of `runs.csv`. `compute` is C = 6·N·D with N the total
/// parameter count (6ND when the table leaves it out); `compute_exact` counts every matmul,
/// attention scores included.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    pub name: String,
    #[serde(default)]
    pub n_layer: Option<i64>,
    #[serde(default)]
    pub n_embd: Option<i64>,
    #[serde(default)]
    pub n_head: Option<i64>,
    pub n_params: f64,
    pub n_params_non_embedding: f64,
    pub n_tokens: f64,
    #[serde(default)]
    pub compute: Option<f64>,
    #[serde(default)]
    pub compute_exact: Option<f64>,
    /// Final validation loss, nats per token.
    pub loss: f64,
    #[serde(default)]
    pub train_loss: Option<f64>,
}

impl RunRow {
    pub fn compute(&self) -> f64 {
        self.compute.unwrap_or(6.0 * self.n_params * self.n_tokens)
    }
}

/// The smallest and largest compute of the runs and of `extra` points.
pub fn compute_range(rows: &[RunRow], extra: impl Iterator<Item = f64>) -> (f64, f64) {
    rows.iter().map(RunRow::compute).chain(extra).fold((f64::MAX, f64::MIN), |(a, b), c| (a.min(c), b.max(c)))
}

/// `n` points spaced evenly in log space from `lo` to `hi`, both included.
pub fn log_range(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| lo * (hi / lo).powf(i as f64 / (n - 1) as f64)).collect()
}

/// Reads a runs table (`runs.csv` or a user's own with the same columns) and rejects what no
/// fit can use: non-finite or non-positive values, repeated names, repeated rows.
pub fn read_table(path: &Path) -> Result<Vec<RunRow>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, rec) in reader.deserialize::<RunRow>().enumerate() {
        rows.push(rec.map_err(|e| anyhow::anyhow!("{}: row {}: {e}", path.display(), i + 1))?);
    }
    validate_rows(&rows).with_context(|| format!("{}", path.display()))?;
    Ok(rows)
}

pub fn validate_rows(rows: &[RunRow]) -> Result<()> {
    ensure!(!rows.is_empty(), "no runs");
    let mut names = HashSet::new();
    let mut seen = HashSet::new();
    for (i, r) in rows.iter().enumerate() {
        let positive = [
            ("n_params", r.n_params),
            ("n_params_non_embedding", r.n_params_non_embedding),
            ("n_tokens", r.n_tokens),
            ("compute", r.compute()),
            ("loss", r.loss),
        ];
        for (col, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                bail!("row {} ({}): {col} must be a finite positive number, not {v}", i + 1, r.name);
            }
        }
        ensure!(names.insert(r.name.clone()), "row {}: the name {:?} appears twice", i + 1, r.name);
        let key = [r.n_params, r.n_params_non_embedding, r.n_tokens, r.loss].map(f64::to_bits);
        ensure!(seen.insert(key), "row {} ({}): duplicate of an earlier row (same N, D and loss)", i + 1, r.name);
    }
    Ok(())
}

/// Writes `runs.csv`.
pub fn write_table(path: &Path, rows: &[RunRow]) -> Result<()> {
    let mut w = csv::Writer::from_path(path).with_context(|| format!("writing {}", path.display()))?;
    for r in rows {
        let mut r = r.clone();
        r.compute = Some(r.compute());
        w.serialize(&r)?;
    }
    w.flush()?;
    Ok(())
}
