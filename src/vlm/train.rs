//! `gptlab vlm train --config FILE.toml [--resume]`: LLaVA's two stages through the shared
//! [`Trainer`] (exact resume, atomic checkpoints, metrics, plots, bf16).
//!
//! - `align`: only the projector trains; the vision tower and the decoder are frozen (LLaVA's
//!   stage 1, lr 1e-3).
//! - `instruct`: projector and decoder train; the tower stays frozen unless
//!   `model.train_vision = true` (LLaVA's stage 2, lr 2e-5 at 7B; small models take more).
//!
//! A stage starts from a CLIP checkpoint and a GPT checkpoint (`model.clip`, `model.gpt`; the
//! projector is new) or from an earlier stage (`model.from`). With the tower frozen, its features
//! are computed once per image before training (`data.cache_features`, on by default).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::data::{Batch, ImageTable, VlmDataset};
use crate::checkpoint;
use crate::data::multimodal::LossOn;
use crate::data::sampler::batch_range;
use crate::dist::{self, ProcessGroup};
use crate::models::gpt::GptConfig;
use crate::models::vlm::{FeatureSelect, ProjectorKind, Vlm, VlmConfig};
use crate::special::IMAGE;
use crate::tokenizer::Tokenizer;
use crate::train::optim::{AdamWConfig, ParamGroup};
use crate::train::trainer::{epoch_loop, Evaluate, MicroLoss, RunParts, Setup, Trainer, ValMetrics};
use crate::train::{TrainSection, TrainSummary};
use gptlab_vision::clip::ClipConfig;

/// Which of LLaVA's stages a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Align,
    Instruct,
}

/// Where the model comes from and, for a new VLM, its vision-to-text wiring.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VlmModelSpec {
    /// A CLIP checkpoint (`gptlab clip train` or `import hf-clip`): the vision tower.
    pub clip: Option<PathBuf>,
    /// A GPT checkpoint: the decoder and its tokenizer.
    pub gpt: Option<PathBuf>,
    /// A VLM checkpoint of an earlier stage, instead of `clip` + `gpt`.
    pub from: Option<PathBuf>,
    pub projector: ProjectorKind,
    pub vision_feature_layer: i64,
    pub select: FeatureSelect,
    /// Stage `instruct` only: train the vision tower too.
    pub train_vision: bool,
}

impl Default for VlmModelSpec {
    fn default() -> Self {
        Self {
            clip: None,
            gpt: None,
            from: None,
            projector: ProjectorKind::Mlp2xGelu,
            vision_feature_layer: -2,
            select: FeatureSelect::Patches,
            train_vision: false,
        }
    }
}

/// The records to train on.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlmDataSpec {
    /// Interleaved, chat, LLaVA or TRL records (see `data::multimodal`).
    pub train: PathBuf,
    /// Held-out records for the validation loss.
    pub val: PathBuf,
    /// Where relative image paths start (default: each file's folder).
    #[serde(default)]
    pub image_root: Option<PathBuf>,
    #[serde(default)]
    pub loss_on: LossOn,
    /// Compute a frozen tower's features once per image instead of once per step.
    #[serde(default = "yes")]
    pub cache_features: bool,
    /// Validation records read (the first ones of `val`).
    #[serde(default = "val_records")]
    pub val_records: usize,
    /// Leave out records longer than the decoder's context (with a count) instead of stopping.
    #[serde(default)]
    pub skip_too_long: bool,
}

fn yes() -> bool {
    true
}

fn val_records() -> usize {
    256
}

/// A VLM training run, as read from TOML; the resolved copy is written next to the outputs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlmTrainConfig {
    pub out_dir: PathBuf,
    pub stage: Stage,
    #[serde(default)]
    pub model: VlmModelSpec,
    pub data: VlmDataSpec,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub optim: AdamWConfig,
}

impl VlmTrainConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        crate::config::read_toml(path)
    }

    /// The stage's frozen parts, ahead of the config's own groups (first match wins).
    fn groups(&self) -> Vec<ParamGroup> {
        let frozen =
            |prefix: &str| ParamGroup { prefix: prefix.into(), lr_scale: 1.0, weight_decay: None, frozen: true };
        let mut groups = Vec::new();
        if self.stage == Stage::Align || !self.model.train_vision {
            groups.push(frozen("vision_tower."));
        }
        if self.stage == Stage::Align {
            groups.push(frozen("language_model."));
        }
        groups.extend(self.train.groups.iter().cloned());
        groups
    }

    fn vision_frozen(&self) -> bool {
        self.stage == Stage::Align || !self.model.train_vision
    }
}

/// The model of a fresh run: its config, tokenizer file, and how to fill its weights.
struct Origin {
    cfg: VlmConfig,
    tokenizer: PathBuf,
    parts: Option<(PathBuf, PathBuf)>,
    from: Option<PathBuf>,
}

/// Resolves the model a run trains: the checkpoint's on resume, an earlier stage's, or a new one
/// assembled from a CLIP and a GPT, whose parts must fit each other.
fn origin(cfg: &VlmTrainConfig, resumed: Option<&Path>) -> Result<Origin> {
    let m = &cfg.model;
    if let Some(dir) = resumed {
        return Ok(Origin {
            cfg: checkpoint::read_config(dir)?,
            tokenizer: dir.join(checkpoint::TOKENIZER_FILE),
            parts: None,
            from: None,
        });
    }
    match (&m.from, &m.clip, &m.gpt) {
        (Some(from), None, None) => {
            let dir = checkpoint::resolve(from)?;
            Ok(Origin {
                cfg: checkpoint::read_config(&dir)?,
                tokenizer: dir.join(checkpoint::TOKENIZER_FILE),
                parts: None,
                from: Some(dir),
            })
        }
        (None, Some(clip), Some(gpt)) => {
            let (clip, gpt) = (checkpoint::resolve(clip)?, checkpoint::resolve(gpt)?);
            let clip_cfg: ClipConfig = checkpoint::read_config(&clip)?;
            let text: GptConfig = checkpoint::read_config(&gpt)?;
            let tokenizer = gpt.join(checkpoint::TOKENIZER_FILE);
            let tok = Tokenizer::from_file(&tokenizer)
                .with_context(|| format!("the GPT checkpoint {} needs its tokenizer", gpt.display()))?;
            let image_token_id = tok.token_to_id(IMAGE).context("the GPT's tokenizer has no <image> token")? as i64;
            let vlm_cfg = VlmConfig {
                vision: clip_cfg.vision,
                text,
                projector: m.projector,
                vision_feature_layer: m.vision_feature_layer,
                select: m.select,
                image_token_id,
                image_mean: clip_cfg.image_mean,
                image_std: clip_cfg.image_std,
            };
            vlm_cfg.validate()?;
            Ok(Origin { cfg: vlm_cfg, tokenizer, parts: Some((clip, gpt)), from: None })
        }
        (None, None, None) => bail!("[model] needs clip and gpt checkpoints, or from (an earlier stage's checkpoint)"),
        _ => bail!("[model] takes either clip and gpt together, or from alone"),
    }
}

/// The objective: next-token loss on the records' trained positions.
struct Supervised {
    model: Vlm,
    val: VlmDataset,
    batch_size: usize,
    device: Device,
    dist: Option<Arc<ProcessGroup>>,
}

impl Supervised {
    fn loss(&self, data: &VlmDataset, batch: &Batch, train: bool) -> Result<Tensor> {
        let images = batch.images.as_ref().map(|t| data.images.as_images(t));
        self.model.loss(&batch.ids, images, &batch.labels, train)
    }
}

impl Evaluate for Supervised {
    /// The mean of the held-out batches' losses, the batches shared among the ranks.
    fn validate(&mut self) -> Result<ValMetrics> {
        let n = self.val.examples.len();
        let b = self.batch_size;
        let batches = n.div_ceil(b);
        let total = dist::sum_over_shards(self.dist.as_deref(), batches, 1, |k| {
            let indices: Vec<usize> = batch_range(n, b, k).collect();
            let batch = self.val.batch(&indices, self.device);
            Ok(vec![tch::no_grad(|| self.loss(&self.val, &batch, false))?.double_value(&[])])
        })?;
        Ok(ValMetrics::from([("val_loss".to_string(), total[0] / batches.max(1) as f64)]))
    }
}

/// Training FLOPs of a batch: 6 x decoder parameters per real position plus attention, and,
/// without the feature cache, the tower's forward pass (2 x its parameters per patch token).
/// In `align` the frozen decoder computes no weight gradients, so this overstates its work by
/// about a third.
fn batch_flops(cfg: &VlmConfig, batch: &Batch, images: usize, tower_runs: bool) -> f64 {
    let t = batch.ids.size()[1];
    let decoder = cfg.text.flops_per_token(t) * batch.positions as f64;
    let tower = if tower_runs {
        let v = &cfg.vision;
        let tokens = (v.image_size / v.patch_size).pow(2) + 1;
        2.0 * 12.0 * (v.layers * v.width * v.width) as f64 * tokens as f64 * images as f64
    } else {
        0.0
    };
    decoder + tower
}

/// Trains per `cfg`; with `resume`, continues from `out_dir/checkpoint` exactly where it stopped.
pub fn train(cfg: &VlmTrainConfig, resume: bool) -> Result<TrainSummary> {
    let mut section = cfg.train.clone();
    section.groups = cfg.groups();
    let setup = Setup::begin(&section, &cfg.out_dir, resume, cfg)?;
    let origin = origin(cfg, setup.resumed.as_deref())?;
    let tok = Tokenizer::from_file(&origin.tokenizer)?;
    let mut model = Vlm::new(&origin.cfg, setup.vs.root())?;
    model.set_compute_kind(setup.kind);
    if let Some((clip, gpt)) = &origin.parts {
        Vlm::load_parts(&setup.vs, clip, gpt)?;
    }
    if let Some(dir) = &origin.from {
        let file = dir.join(checkpoint::MODEL_FILE);
        checkpoint::fill(&setup.vs, checkpoint::read_tensors(&file)?, &file)?;
    }
    let d = &cfg.data;
    crate::main_eprintln!("[vlm] reading {} and {}", d.train.display(), d.val.display());
    let root = d.image_root.as_deref();
    let mut train = VlmDataset::load(&d.train, root, &tok, &origin.cfg, d.loss_on, None, d.skip_too_long)?;
    let mut val = VlmDataset::load(&d.val, root, &tok, &origin.cfg, d.loss_on, Some(d.val_records), d.skip_too_long)?;
    let t = &cfg.train;
    let trainer = Trainer::new(
        setup,
        RunParts {
            model_config: &origin.cfg,
            tokenizer: Some(origin.tokenizer.clone()),
            optim: cfg.optim.clone(),
            unit: "examples",
            units_per_step: t.examples_per_step(),
            baseline: None,
        },
    )?;
    let device = trainer.device();
    let cached = d.cache_features && cfg.vision_frozen();
    if cached {
        crate::main_eprintln!(
            "[vlm] caching the frozen tower's features of {} + {} images",
            image_count(&train),
            image_count(&val)
        );
        let group = trainer.group();
        train.cache_features(&model, device, group.as_deref())?;
        val.cache_features(&model, device, group.as_deref())?;
    }
    crate::main_eprintln!(
        "[vlm] stage {:?}: {} training and {} validation records, {} tokens per image",
        cfg.stage,
        train.examples.len(),
        val.examples.len(),
        origin.cfg.tokens_per_image()
    );
    ensure!(!train.examples.is_empty(), "{} holds no training records", d.train.display());
    let dist = trainer.group();
    let mut objective = Supervised { model, val, batch_size: t.batch_size, device, dist };
    // Batches are built on this thread: the image table's tensors are not shared across threads.
    epoch_loop(trainer, &mut objective, train.examples.len(), t.batch_size, |obj, indices| {
        let batch = train.batch(indices, obj.device);
        let images = indices.iter().map(|&i| train.examples[i].images.len()).sum();
        let flops = batch_flops(&obj.model.cfg, &batch, images, !cached);
        Ok(MicroLoss::mean_of(obj.loss(&train, &batch, true)?, batch.trained as f64, flops))
    })
}

fn image_count(data: &VlmDataset) -> i64 {
    match &data.images {
        ImageTable::Pixels { bytes, .. } => bytes.size()[0],
        ImageTable::Features(f) => f.size()[0],
    }
}
