//! Training: a [`trainer::Trainer`] that any objective drives (set-up, one optimizer step from a
//! loss, validation, metrics, progress, checkpoints, exact resume), the supervised loop
//! [`trainer::run`] over a batch stream, AdamW with parameter groups, the LR schedule, and the
//! language-modeling objective [`lm`] behind `gptlab train`.

pub mod lm;
pub mod optim;
pub mod schedule;
pub mod trainer;

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use crate::data::sampler::SamplerState;
pub use gptlab_nn::Dtype;
pub use lm::{train, ModelSpec, TrainConfig};
pub use optim::ParamGroup;
use schedule::LrSchedule;
pub use trainer::TrainSummary;

/// Optimisation and bookkeeping settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per update.
    pub grad_accum: usize,
    pub max_steps: u64,
    pub lr: f64,
    /// Defaults to lr / 10.
    pub min_lr: Option<f64>,
    pub warmup_steps: u64,
    /// Defaults to max_steps.
    pub decay_steps: Option<u64>,
    /// 0 disables clipping.
    pub grad_clip: f64,
    pub eval_interval: u64,
    pub eval_batches: u64,
    pub log_interval: u64,
    pub ckpt_interval: u64,
    pub seed: u64,
    pub device: String,
    pub threads: Option<usize>,
    /// `auto` (bf16 matmuls on CUDA, fp32 on CPU), `fp32` or `bf16` (on CPU too): matmuls and
    /// attention in bf16, LayerNorm, softmax, the loss and the optimizer in fp32.
    pub dtype: Dtype,
    /// Peak TFLOP/s for MFU; measured with a large matmul when absent.
    pub peak_tflops: Option<f64>,
    /// Batches prepared ahead by the loader thread.
    pub prefetch: usize,
    /// Parameter groups by name prefix (first match wins): their own learning-rate multiplier,
    /// weight decay, or frozen.
    pub groups: Vec<ParamGroup>,
}

impl TrainSection {
    /// Examples (rows, pairs, prompts: the run's unit) one optimizer step consumes.
    pub fn examples_per_step(&self) -> u64 {
        (self.batch_size * self.grad_accum) as u64
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(self.batch_size > 0 && self.grad_accum > 0, "batch_size and grad_accum must be positive");
        ensure!(self.max_steps > 0, "max_steps must be positive");
        ensure!(self.eval_batches > 0, "eval_batches must be positive");
        ensure!(
            self.log_interval > 0 && self.eval_interval > 0 && self.ckpt_interval > 0,
            "log, eval and checkpoint intervals must be positive"
        );
        ensure!(!self.lr.is_nan() && self.lr >= 0.0, "lr must be non-negative");
        ensure!(
            self.grad_clip.is_finite() && self.grad_clip >= 0.0,
            "grad_clip must be >= 0 (0 disables clipping), got {}",
            self.grad_clip
        );
        if let Some(min_lr) = self.min_lr {
            ensure!(min_lr.is_finite() && min_lr >= 0.0, "min_lr must be non-negative, got {min_lr}");
        }
        for g in &self.groups {
            g.validate()?;
        }
        Ok(())
    }

    pub fn schedule(&self) -> LrSchedule {
        LrSchedule {
            lr: self.lr,
            min_lr: self.min_lr.unwrap_or(self.lr / 10.0),
            warmup_steps: self.warmup_steps,
            decay_steps: self.decay_steps.unwrap_or(self.max_steps),
        }
    }
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            batch_size: 16,
            grad_accum: 1,
            max_steps: 1000,
            lr: 1e-3,
            min_lr: None,
            warmup_steps: 100,
            decay_steps: None,
            grad_clip: 1.0,
            eval_interval: 100,
            eval_batches: 20,
            log_interval: 10,
            ckpt_interval: 500,
            seed: 1337,
            device: "auto".into(),
            threads: None,
            dtype: Dtype::Auto,
            peak_tflops: None,
            prefetch: 4,
            groups: Vec::new(),
        }
    }
}

/// How a run counted in epochs (fine-tuning, SFT) fills the `[train]` keys its user left out.
pub struct EpochRecipe {
    pub epochs: f64,
    /// Share of the steps the learning rate warms up over.
    pub warmup_fraction: f64,
    pub lr: f64,
    pub batch_size: i64,
}

impl EpochRecipe {
    /// Checks a config section's `epochs` and `warmup_fraction` (`section` names it in errors).
    pub fn check(section: &str, epochs: f64, warmup_fraction: f64) -> Result<()> {
        ensure!(epochs > 0.0 && epochs.is_finite(), "{section}.epochs must be positive, got {epochs}");
        ensure!(
            (0.0..1.0).contains(&warmup_fraction),
            "{section}.warmup_fraction must be in [0, 1), got {warmup_fraction}"
        );
        Ok(())
    }
}

/// The integer `key` of a user's `[train]` table, or `default`.
fn table_int(table: &toml::Table, key: &str, default: i64) -> i64 {
    table.get(key).and_then(|v| v.as_integer()).unwrap_or(default)
}

/// The user's `[train]` keys over those `recipe` derives: `max_steps` from the epochs (unless
/// given), warmup as a share of it, decay to 0, validation and a checkpoint every epoch.
/// `batches(b)` is how many batches of `b` examples one epoch holds.
pub fn epoch_section(user: &toml::Table, recipe: &EpochRecipe, batches: impl Fn(usize) -> u64) -> Result<TrainSection> {
    let mut t = user.clone();
    let b = table_int(&t, "batch_size", recipe.batch_size).max(1) as usize;
    let per_epoch = batches(b).div_ceil(table_int(&t, "grad_accum", 1).max(1) as u64);
    let max_steps = ((recipe.epochs * per_epoch as f64).ceil() as i64).max(1);
    let max_steps = table_int(&t, "max_steps", max_steps).max(0);
    let derived: [(&str, toml::Value); 8] = [
        ("lr", recipe.lr.into()),
        ("batch_size", recipe.batch_size.into()),
        ("max_steps", max_steps.into()),
        ("warmup_steps", ((recipe.warmup_fraction * max_steps as f64).ceil() as i64).into()),
        ("min_lr", 0.0.into()),
        ("eval_interval", (per_epoch as i64).clamp(1, max_steps.max(1)).into()),
        ("ckpt_interval", (per_epoch as i64).clamp(1, max_steps.max(1)).into()),
        ("log_interval", (per_epoch as i64).clamp(1, 10).into()),
    ];
    for (key, value) in derived {
        t.entry(key.to_string()).or_insert(value);
    }
    let section: TrainSection =
        toml::Value::Table(t).try_into().map_err(|e: toml::de::Error| anyhow::anyhow!("[train]: {}", e.message()))?;
    section.validate()?;
    Ok(section)
}

/// The learning rate a checkpoint was pretrained with, when it kept its training state: what
/// fine-tuning recipes scale from.
pub fn pretraining_lr(dir: &std::path::Path) -> Option<f64> {
    crate::checkpoint::read_state::<TrainState>(dir).ok().map(|s| s.schedule.lr)
}

/// Where a training run stands; with the optimizer moments this is all that exact resume needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer updates done.
    pub step: u64,
    /// Progress in the run's unit: tokens for a GPT, image-text pairs for CLIP.
    pub units_seen: u64,
    pub sampler: SamplerState,
    /// Base of the per-step torch seed (dropout); see [`trainer::step_seed`].
    pub torch_seed: i64,
    pub best_val_loss: Option<f64>,
    /// What the batch stream and schedule were, so a resume can refuse a run that would
    /// silently differ from a straight one.
    pub batch_size: usize,
    pub grad_accum: usize,
    pub schedule: LrSchedule,
    /// The resolved compute precision (`fp32` or `bf16`), reused on resume; absent in
    /// checkpoints written before mixed precision on CPU, which were all fp32 or CUDA `auto`.
    #[serde(default)]
    pub dtype: Option<String>,
}
