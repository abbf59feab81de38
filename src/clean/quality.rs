//! GPT-3's quality filter (Brown et al. 2020, appendix A): a logistic regression that tells
//! curated text (positives) from raw crawl (negatives) on hashed word unigram and bigram
//! features, and a keep rule that also keeps some low-scoring pages: keep a document when a
//! Pareto(α = 9) draw exceeds 1 − score, so P(keep) = (2 − score)^−α.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use super::records::{checked_input, for_each_batch, Doc, JsonlWriter};

/// A document's features: sorted distinct hashed unigram and bigram indices, each with the same
/// weight so that the vector has unit length.
pub fn features(text: &str, dims_log2: u32) -> Vec<u32> {
    let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
    let mask = (1u64 << dims_log2) - 1;
    let mut idx: Vec<u32> = words
        .iter()
        .map(|w| (xxh3_64(w.as_bytes()) & mask) as u32)
        .chain(words.windows(2).map(|p| (xxh3_64(format!("{} {}", p[0], p[1]).as_bytes()) & mask) as u32))
        .collect();
    idx.sort_unstable();
    idx.dedup();
    idx
}

/// The classifier: one weight per hashed feature and a bias.
#[derive(Clone, Debug, PartialEq)]
pub struct QualityModel {
    pub dims_log2: u32,
    pub weights: Vec<f32>,
    pub bias: f32,
}

/// What `train` measured on its held-out documents.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct QualityReport {
    pub train_docs: usize,
    pub val_docs: usize,
    /// Held-out accuracy, and precision and recall of "curated" at score 0.5.
    pub val_accuracy: f64,
    pub val_precision: f64,
    pub val_recall: f64,
}

/// How `train` fits the model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainOptions {
    /// log2 of the number of hashed features (18..=20 as the issue asks).
    pub dims_log2: u32,
    pub epochs: usize,
    pub lr: f64,
    /// Share of each class held out for the report.
    pub val_fraction: f64,
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self { dims_log2: 20, epochs: 3, lr: 0.5, val_fraction: 0.1, seed: 0 }
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl QualityModel {
    /// The probability that `text` is curated text.
    pub fn score(&self, text: &str) -> f64 {
        self.score_features(&features(text, self.dims_log2))
    }

    fn score_features(&self, f: &[u32]) -> f64 {
        let norm = 1.0 / (f.len().max(1) as f64).sqrt();
        let z: f64 = f.iter().map(|&i| self.weights[i as usize] as f64).sum::<f64>() * norm;
        sigmoid(z + self.bias as f64)
    }

    /// Writes `model.safetensors` (the weights) and `model.json` (dims and bias) into `dir`.
    pub fn save(&self, dir: &Path, report: &QualityReport, opts: &TrainOptions) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let w = tch::Tensor::from_slice(&self.weights);
        crate::checkpoint::write_safetensors(&[("weights".to_string(), w)], &dir.join("model.safetensors"))?;
        let meta = serde_json::json!({"dims_log2": self.dims_log2, "bias": self.bias, "report": report, "train": opts});
        std::fs::write(dir.join("model.json"), serde_json::to_string_pretty(&meta)? + "\n")
            .with_context(|| format!("writing {}", dir.join("model.json").display()))
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let meta_path = dir.join("model.json");
        let text = std::fs::read_to_string(&meta_path).with_context(|| {
            format!("reading {} (train one with `gptlab clean quality train`)", meta_path.display())
        })?;
        let meta: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", meta_path.display()))?;
        let dims_log2 =
            meta["dims_log2"].as_u64().with_context(|| format!("{} lacks dims_log2", meta_path.display()))? as u32;
        let bias = meta["bias"].as_f64().with_context(|| format!("{} lacks bias", meta_path.display()))? as f32;
        let tensors = crate::checkpoint::read_tensors(&dir.join("model.safetensors"))?;
        let w = tensors.into_iter().find(|(n, _)| n == "weights").context("model.safetensors lacks \"weights\"")?.1;
        let weights = Vec::<f32>::try_from(&w)?;
        ensure!(
            weights.len() == 1 << dims_log2,
            "{} holds {} weights, not 2^{dims_log2}",
            dir.display(),
            weights.len()
        );
        Ok(Self { dims_log2, weights, bias })
    }
}

/// Fits the classifier by stochastic gradient descent on the logistic loss, positives and
/// negatives weighted to count equally; a seeded share of each is held out for the report.
pub fn train(positives: &[&str], negatives: &[&str], opts: &TrainOptions) -> Result<(QualityModel, QualityReport)> {
    ensure!((10..=24).contains(&opts.dims_log2), "--dims-log2 must be in 10..=24, got {}", opts.dims_log2);
    ensure!(opts.epochs > 0 && opts.lr > 0.0, "epochs and lr must be positive");
    ensure!((0.0..0.5).contains(&opts.val_fraction), "val_fraction must be in [0, 0.5)");
    ensure!(
        !positives.is_empty() && !negatives.is_empty(),
        "need both curated (positive) and raw (negative) documents"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut split = |docs: &[&str], label: f64| {
        let mut rows: Vec<(Vec<u32>, f64)> = docs.iter().map(|d| (features(d, opts.dims_log2), label)).collect();
        rows.shuffle(&mut rng);
        let n_val = (rows.len() as f64 * opts.val_fraction) as usize;
        let train = rows.split_off(n_val);
        (train, rows)
    };
    let (pos_train, pos_val) = split(positives, 1.0);
    let (neg_train, neg_val) = split(negatives, 0.0);
    let class_weight = |label: f64| {
        let n = (pos_train.len() + neg_train.len()) as f64;
        n / (2.0 * if label > 0.5 { pos_train.len() } else { neg_train.len() } as f64)
    };
    let (wp, wn) = (class_weight(1.0), class_weight(0.0));
    let mut train: Vec<(Vec<u32>, f64)> = pos_train.into_iter().chain(neg_train).collect();
    let mut model = QualityModel { dims_log2: opts.dims_log2, weights: vec![0.0; 1 << opts.dims_log2], bias: 0.0 };
    for _ in 0..opts.epochs {
        train.shuffle(&mut rng);
        for (f, y) in &train {
            let g = (model.score_features(f) - y) * if *y > 0.5 { wp } else { wn };
            let step = (opts.lr * g / (f.len().max(1) as f64).sqrt()) as f32;
            for &i in f {
                model.weights[i as usize] -= step;
            }
            model.bias -= (opts.lr * g * 0.1) as f32;
        }
    }
    let (mut tp, mut fp, mut fneg, mut right) = (0, 0, 0, 0);
    let val: Vec<&(Vec<u32>, f64)> = pos_val.iter().chain(&neg_val).collect();
    for (f, y) in &val {
        let pred = model.score_features(f) >= 0.5;
        let truth = *y > 0.5;
        right += (pred == truth) as usize;
        tp += (pred && truth) as usize;
        fp += (pred && !truth) as usize;
        fneg += (!pred && truth) as usize;
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let report = QualityReport {
        train_docs: train.len(),
        val_docs: val.len(),
        val_accuracy: ratio(right, val.len()),
        val_precision: ratio(tp, tp + fp),
        val_recall: ratio(tp, tp + fneg),
    };
    Ok((model, report))
}

/// What `filter` writes to `stats.json`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FilterStats {
    pub documents: usize,
    pub kept: usize,
    pub kept_fraction: f64,
    pub mean_score: f64,
    pub alpha: f64,
    pub seed: u64,
    pub seconds: f64,
}

/// Streams the records of `files` through `model`: `f` gets each batch, the input position of
/// its first record and the batch's scores (computed in parallel).
fn for_each_scored(
    model: &QualityModel,
    files: &[PathBuf],
    field: &str,
    mut f: impl FnMut(usize, &[Doc], &[f64]) -> Result<()>,
) -> Result<()> {
    use rayon::prelude::*;
    for_each_batch(files, field, |first, docs| {
        let scores: Vec<f64> =
            docs.par_iter().map(|d| model.score(d.value[field].as_str().unwrap_or_default())).collect();
        f(first, &docs, &scores)
    })
}

/// A record's line with its `quality_score`.
fn with_score(d: &Doc, score: f64) -> String {
    let mut v = d.value.clone();
    v["quality_score"] = score.into();
    v.to_string()
}

/// Writes each record of `input` with its `quality_score` to `out`.
pub fn score_file(model: &QualityModel, input: &Path, out: &Path, field: &str) -> Result<usize> {
    let (files, n) = checked_input(input, field)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut w = JsonlWriter::create(out)?;
    for_each_scored(model, &files, field, |_, docs, scores| {
        docs.iter().zip(scores).try_for_each(|(d, &s)| w.line(&with_score(d, s)))
    })?;
    w.commit()?;
    Ok(n)
}

/// GPT-3's filter: scores every record of `input` and keeps it by [`pareto_keep`], each
/// document's draw seeded by `seed` and its position; streams `kept.jsonl` and `removed.jsonl`
/// (with `quality_score`), then writes `stats.json` and the score histogram
/// `scores.png`/`.svg` into `out`.
pub fn filter(
    model: &QualityModel,
    input: &Path,
    out: &Path,
    field: &str,
    alpha: f64,
    seed: u64,
) -> Result<FilterStats> {
    ensure!(alpha > 0.0 && alpha.is_finite(), "--alpha must be positive, got {alpha}");
    let start = std::time::Instant::now();
    let (files, _) = checked_input(input, field)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut kept = JsonlWriter::create(&out.join("kept.jsonl"))?;
    let mut removed = JsonlWriter::create(&out.join("removed.jsonl"))?;
    let (mut scores, mut keep) = (Vec::new(), Vec::new());
    for_each_scored(model, &files, field, |first, docs, batch_scores| {
        for (k, (d, &s)) in docs.iter().zip(batch_scores).enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream((first + k) as u64);
            let keep_it = pareto_keep(s, alpha, &mut rng);
            if keep_it {
                kept.line(&d.raw)?;
            } else {
                removed.line(&with_score(d, s))?;
            }
            scores.push(s);
            keep.push(keep_it);
        }
        Ok(())
    })?;
    kept.commit()?;
    removed.commit()?;
    const BINS: usize = 10;
    let bin = |s: f64| ((s * BINS as f64) as usize).min(BINS - 1);
    let mut all = vec![0.0; BINS];
    let mut kept = vec![0.0; BINS];
    for (&s, &k) in scores.iter().zip(&keep) {
        all[bin(s)] += 1.0;
        if k {
            kept[bin(s)] += 1.0;
        }
    }
    let y_max = all.iter().cloned().fold(1.0, f64::max) * 1.1;
    crate::plot::BarChart {
        title: format!("quality scores, and what the Pareto rule (alpha {alpha}) kept"),
        y_label: "documents".into(),
        categories: (0..BINS)
            .map(|b| format!("{:.1}-{:.1}", b as f64 / BINS as f64, (b + 1) as f64 / BINS as f64))
            .collect(),
        groups: vec![("all".into(), all), ("kept".into(), kept)],
        y_max,
    }
    .save(&out.join("scores"))?;
    let n_kept = keep.iter().filter(|&&k| k).count();
    let stats = FilterStats {
        documents: scores.len(),
        kept: n_kept,
        kept_fraction: n_kept as f64 / scores.len() as f64,
        mean_score: scores.iter().sum::<f64>() / scores.len() as f64,
        alpha,
        seed,
        seconds: start.elapsed().as_secs_f64(),
    };
    std::fs::write(out.join("stats.json"), serde_json::to_string_pretty(&stats)? + "\n")
        .with_context(|| format!("writing {}", out.join("stats.json").display()))?;
    Ok(stats)
}

/// GPT-3's keep rule: a Lomax (numpy's `pareto`) draw with shape `alpha` against 1 − score.
pub fn pareto_keep<R: Rng + ?Sized>(score: f64, alpha: f64, rng: &mut R) -> bool {
    let u: f64 = rng.random();
    let draw = (1.0 - u).powf(-1.0 / alpha) - 1.0;
    draw > 1.0 - score
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pareto_rule_keeps_two_minus_score_to_the_minus_alpha() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for score in [0.0, 0.5, 0.9, 1.0] {
            let n = 200_000;
            let kept = (0..n).filter(|_| pareto_keep(score, 9.0, &mut rng)).count() as f64 / n as f64;
            let expected = (2.0 - score).powf(-9.0);
            // Binomial standard error, at least 1e-4.
            let se = (expected * (1.0 - expected) / n as f64).sqrt().max(1e-4);
            assert!((kept - expected).abs() < 5.0 * se, "score {score}: kept {kept}, expected {expected}");
        }
    }

    #[test]
    fn the_classifier_separates_two_vocabularies_and_round_trips() {
        let good: Vec<String> =
            (0..200).map(|i| format!("the red circle is left of the blue square number {i}")).collect();
        let bad: Vec<String> = (0..200).map(|i| format!("buy cheap pills now click here best price {i}")).collect();
        let (g, b): (Vec<&str>, Vec<&str>) =
            (good.iter().map(String::as_str).collect(), bad.iter().map(String::as_str).collect());
        let opts = TrainOptions { dims_log2: 12, ..TrainOptions::default() };
        let (model, report) = train(&g, &b, &opts).unwrap();
        assert_eq!(report.val_accuracy, 1.0, "{report:?}");
        assert!(model.score("the green circle is above the red square") > 0.9);
        assert!(model.score("cheap pills click now") < 0.1);
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path(), &report, &opts).unwrap();
        assert_eq!(QualityModel::load(dir.path()).unwrap(), model);
        assert_eq!(features("A b a", 12).len(), 4, "unigrams a, b and bigrams 'a b', 'b a'");
    }
}
