//! CLIP pretraining on image-caption pairs: `gptlab clip train --config FILE.toml [--resume]`,
//! through the shared [`Trainer`] (so the same guarantees: exact resume, atomic checkpoints,
//! NaN stops, metrics, plots, mixed precision).
//!
//! Data: the synthetic image world, rendered on the fly. Batch `i` is a pure function of
//! (seed, i), like the GPT's windows, so the sampler state is the index of the next batch.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use gptlab_vision::clip::{contrastive_loss, Clip, ClipConfig};
use gptlab_vision::world::{generate_item, WorldConfig};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Tensor};

use super::data::{read_captions_jsonl, read_coco, CaptionedImage, FilePairs, PairStream, TextSide, WorldPairs};
use crate::checkpoint;
use crate::dist::{self, ProcessGroup};
use crate::tokenizer::Tokenizer;
use crate::train::optim::{AdamW, AdamWConfig};
use crate::train::trainer::{self, Evaluate, Objective, RunParts, Setup, Trainer, ValMetrics};
use crate::train::{TrainSection, TrainSummary};

/// The model section: a preset of [`ClipConfig::preset`]; the text vocabulary comes from the
/// tokenizer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClipModelSpec {
    pub preset: String,
}

impl Default for ClipModelSpec {
    fn default() -> Self {
        Self { preset: "small".into() }
    }
}

/// Where image-caption pairs come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PairSourceKind {
    /// The synthetic image world, rendered on the fly.
    #[default]
    Synthetic,
    /// Image files listed by a captions JSONL (`captions`).
    Captions,
    /// COCO captions (`coco_annotations` and `coco_images`).
    Coco,
}

/// Where image-caption pairs come from.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClipDataSpec {
    pub source: PairSourceKind,
    /// The synthetic world's settings; its `side` must equal the model's image size.
    pub world: WorldConfig,
    /// A captions JSONL (`{"image": "x.png", "caption": "..."}`, paths relative to it).
    pub captions: Option<PathBuf>,
    pub coco_annotations: Option<PathBuf>,
    pub coco_images: Option<PathBuf>,
    /// Share of image files held out for validation (file sources).
    pub val_fraction: f64,
    /// Random horizontal flips of training images (file sources). Off by default, because
    /// captions that say left and right would then be wrong half the time.
    pub hflip: bool,
    /// A tokenizer.json; when absent one is trained on world captions and saved in out_dir.
    pub tokenizer: Option<PathBuf>,
    /// Vocabulary of a tokenizer trained here.
    pub vocab_size: usize,
    /// Held-out pairs (a separate seed stream) for the validation loss.
    pub val_pairs: u64,
}

impl Default for ClipDataSpec {
    fn default() -> Self {
        Self {
            source: PairSourceKind::Synthetic,
            world: WorldConfig::default(),
            captions: None,
            coco_annotations: None,
            coco_images: None,
            val_fraction: 0.05,
            hflip: false,
            tokenizer: None,
            vocab_size: 512,
            val_pairs: 256,
        }
    }
}

/// CLIP's optimiser defaults (open_clip): betas (0.9, 0.98), eps 1e-6, weight decay 0.2.
pub fn clip_adamw() -> AdamWConfig {
    AdamWConfig { beta1: 0.9, beta2: 0.98, eps: 1e-6, weight_decay: 0.2 }
}

/// A CLIP training run, as read from TOML; the resolved copy is written next to the outputs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipTrainConfig {
    pub out_dir: PathBuf,
    #[serde(default)]
    pub model: ClipModelSpec,
    #[serde(default)]
    pub data: ClipDataSpec,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default = "clip_adamw")]
    pub optim: AdamWConfig,
}

impl ClipTrainConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        crate::config::read_toml(path)
    }
}

/// Captions of the first `n` world items: the corpus a CLIP tokenizer is trained on.
fn world_captions(world: &WorldConfig, seed: u64, n: u64) -> Vec<String> {
    (0..n).flat_map(|i| generate_item(world, seed, i).captions).collect()
}

/// The contrastive objective over a stream of image-caption pairs. Under data parallelism each
/// rank encodes every `world_size`-th pair of a micro-batch, the features are gathered so every
/// rank contrasts the whole batch, and validation batches are shared out.
struct Contrastive {
    model: Clip,
    dist: Option<Arc<ProcessGroup>>,
    source: Arc<dyn PairStream>,
    /// Images skipped before this run resumed, so that the metrics count over the whole run.
    skipped_before: u64,
    batch_size: u64,
    device: Device,
}

impl Evaluate for Contrastive {
    /// The mean of the held-out batches' losses, the batches shared among the ranks.
    fn validate(&mut self) -> Result<ValMetrics> {
        let len = self.source.val_len();
        let b = self.batch_size;
        // A single pair has nothing to be contrasted with: a last batch of one is left out.
        let batches = len / b + u64::from(len % b >= 2);
        let sums = dist::sum_over_shards(self.dist.as_deref(), batches as usize, 1, |i| {
            let start = i as u64 * b;
            let (pixels, tokens) = self.source.val_batch(start, b.min(len - start))?;
            let loss =
                tch::no_grad(|| self.model.loss(&pixels.to_device(self.device), &tokens.to_device(self.device)))?;
            Ok(vec![loss.double_value(&[])])
        })?;
        Ok(ValMetrics::from([("val_loss".to_string(), sums[0] / batches as f64)]))
    }

    fn extra_metrics(&self) -> Vec<(&'static str, serde_json::Value)> {
        let scale = self.model.logit_scale.exp().double_value(&[]);
        vec![("skipped_images", (self.skipped_before + self.source.skipped()).into()), ("logit_scale", scale.into())]
    }
}

impl Objective for Contrastive {
    type Batch = (Tensor, Tensor);

    fn loss(&mut self, (pixels, tokens): (Tensor, Tensor)) -> Result<Tensor> {
        let (pixels, tokens) = (pixels.to_device(self.device), tokens.to_device(self.device));
        let Some(group) = &self.dist else {
            return self.model.loss(&pixels, &tokens);
        };
        let rank = dist::rank_world(Some(group));
        let image = self.model.image_features(&dist::rank_rows(&pixels, rank))?; // [B / W, D]
        let text = self.model.text_features(&dist::rank_rows(&tokens, rank))?;
        let (image, text) = (group.all_gather_rows(&image)?, group.all_gather_rows(&text)?); // [B, D]
        Ok(contrastive_loss(&image, &text, &self.model.logit_scale))
    }

    /// Every image is a full grid of patches; captions count only the positions the batch is
    /// padded to (its longest caption). This rank's share of the pairs.
    fn flops(&self, (pixels, tokens): &(Tensor, Tensor)) -> f64 {
        let world = dist::rank_world(self.dist.as_deref()).1 as i64;
        let (b, l) = (pixels.size()[0], tokens.size()[1]);
        (b / world) as f64 * flops_per_pair(&self.model.cfg, l)
    }

    fn after_step(&mut self) {
        self.model.clamp_logit_scale();
    }
}

/// The last `skipped_images` logged at or before `step` (0 when none was).
fn skips_logged_by(metrics: &Path, step: u64) -> Result<u64> {
    if !metrics.exists() {
        return Ok(0);
    }
    Ok(crate::jsonl::read_jsonl(metrics)?
        .iter()
        .filter(|r| r["step"].as_u64().is_some_and(|s| s <= step))
        .filter_map(|r| r["skipped_images"].as_u64())
        .next_back()
        .unwrap_or(0))
}

/// Streams training batches `next_batch..` from a loader thread.
fn spawn_loader(
    source: Arc<dyn PairStream>,
    seed: u64,
    next_batch: u64,
    batch_size: u64,
    prefetch: usize,
) -> Receiver<(Tensor, Tensor)> {
    let (tx, rx) = sync_channel(prefetch.max(1));
    std::thread::spawn(move || {
        for index in next_batch.. {
            match source.train_batch(seed, index, batch_size) {
                Ok(batch) => {
                    if tx.send(batch).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    eprintln!("batch loader failed: {e:#}");
                    break;
                }
            }
        }
    });
    rx
}

const VAL_SEED_SALT: u64 = 0x0c11_9a11;

/// What a run needs before it builds its model: the tokenizer, the model config and, for file
/// sources, the pair list.
struct Prepared {
    tok_path: PathBuf,
    tokenizer: Tokenizer,
    clip_cfg: ClipConfig,
    files: Option<Vec<CaptionedImage>>,
}

/// Reads the data source, finds or trains the tokenizer (a trained one is written to
/// `tok_out`), and resolves the model config (the checkpoint's when resuming).
fn prepare(cfg: &ClipTrainConfig, resumed: Option<&Path>, tok_out: &Path) -> Result<Prepared> {
    let files = match cfg.data.source {
        PairSourceKind::Synthetic => None,
        PairSourceKind::Captions => {
            let path = cfg.data.captions.as_ref().context("data.source = \"captions\" needs data.captions")?;
            Some(read_captions_jsonl(path)?)
        }
        PairSourceKind::Coco => {
            let ann =
                cfg.data.coco_annotations.as_ref().context("data.source = \"coco\" needs data.coco_annotations")?;
            let images = cfg.data.coco_images.as_ref().context("data.source = \"coco\" needs data.coco_images")?;
            Some(read_coco(ann, images)?)
        }
    };
    let tok_path = match (resumed, &cfg.data.tokenizer) {
        (Some(dir), _) => dir.join(checkpoint::TOKENIZER_FILE),
        (None, Some(path)) => path.clone(),
        (None, None) => {
            let captions = match &files {
                Some(pairs) => pairs.iter().map(|p| p.caption.clone()).collect(),
                None => world_captions(&cfg.data.world, cfg.train.seed, 2000),
            };
            Tokenizer::train(captions.iter(), cfg.data.vocab_size, tok_out)?;
            tok_out.to_path_buf()
        }
    };
    let tokenizer = Tokenizer::from_file(&tok_path)?;
    let clip_cfg: ClipConfig = match resumed {
        Some(dir) => checkpoint::read_config(dir)?,
        None => ClipConfig::preset(&cfg.model.preset, tokenizer.vocab_size() as i64, tokenizer.eot() as i64)?,
    };
    if files.is_none() {
        ensure!(
            cfg.data.world.side as i64 == clip_cfg.vision.image_size,
            "data.world.side ({}) must equal the model's image size ({})",
            cfg.data.world.side,
            clip_cfg.vision.image_size
        );
        cfg.data.world.validate()?;
    }
    Ok(Prepared { tok_path, tokenizer, clip_cfg, files })
}

fn make_source(
    cfg: &ClipTrainConfig,
    clip_cfg: &ClipConfig,
    tokenizer: Tokenizer,
    files: Option<Vec<CaptionedImage>>,
    val_seed: u64,
) -> Result<Arc<dyn PairStream>> {
    let preprocess = clip_cfg.preprocess();
    let text = TextSide { tokenizer, context: clip_cfg.text.context_length as usize };
    Ok(match files {
        Some(pairs) => Arc::new(FilePairs::new(pairs, cfg.data.val_fraction, preprocess, cfg.data.hflip, text)?),
        None => {
            let (world, val_pairs) = (cfg.data.world.clone(), cfg.data.val_pairs);
            Arc::new(WorldPairs { world, preprocess, text, val_seed, val_pairs })
        }
    })
}

/// Loader against training throughput, in images/s, for one config.
#[derive(Debug, Serialize)]
pub struct LoaderBench {
    pub batches: u64,
    pub batch_size: usize,
    pub loader_images_per_s: f64,
    pub train_images_per_s: f64,
    /// How many times faster the loader produces images than a training step consumes them.
    pub ratio: f64,
}

/// Times `batches` loader batches (decoding, augmentation, tokenising, on all cores), then as
/// many full training steps on them, separately, so the ratio says whether the loader can keep
/// the model fed.
pub fn bench_loader(cfg: &ClipTrainConfig, batches: u64) -> Result<LoaderBench> {
    let t = &cfg.train;
    ensure!(batches > 0 && t.batch_size >= 2, "need at least one batch of at least 2 pairs");
    let device = crate::device::parse_device(&t.device)?;
    crate::device::set_threads(t.threads)?;
    let tok_out = std::env::temp_dir().join(format!("gptlab-bench-tokenizer-{}.json", std::process::id()));
    let Prepared { tokenizer, clip_cfg, files, .. } = prepare(cfg, None, &tok_out)?;
    let source = make_source(cfg, &clip_cfg, tokenizer, files, VAL_SEED_SALT)?;
    let b = t.batch_size as u64;
    let start = std::time::Instant::now();
    let loaded: Vec<(Tensor, Tensor)> =
        (0..batches).map(|i| source.train_batch(t.seed, i, b)).collect::<Result<_>>()?;
    let loader_secs = start.elapsed().as_secs_f64();
    tch::manual_seed(t.seed as i64);
    let vs = VarStore::new(device);
    let mut model = Clip::new(&clip_cfg, vs.root())?;
    model.set_compute_kind(t.dtype.compute_kind(device));
    let mut opt = AdamW::new(&vs, cfg.optim.clone(), &t.groups)?;
    let mut step = |(pixels, tokens): &(Tensor, Tensor)| -> Result<f64> {
        let loss = model.loss(&pixels.to_device(device), &tokens.to_device(device))?;
        loss.backward();
        let _ = opt.clip_grad_norm(1.0);
        opt.step(1e-4);
        opt.zero_grad();
        model.clamp_logit_scale();
        Ok(loss.double_value(&[]))
    };
    step(&loaded[0])?; // warm-up
    let start = std::time::Instant::now();
    for batch in &loaded {
        step(batch)?;
    }
    let train_secs = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&tok_out);
    let images = (batches * b) as f64;
    let (loader, train) = (images / loader_secs, images / train_secs);
    Ok(LoaderBench {
        batches,
        batch_size: t.batch_size,
        loader_images_per_s: loader,
        train_images_per_s: train,
        ratio: loader / train,
    })
}

/// Trains per `cfg`; with `resume`, continues from `out_dir/checkpoint` exactly where it stopped.
pub fn train(cfg: &ClipTrainConfig, resume: bool) -> Result<TrainSummary> {
    let t = &cfg.train;
    ensure!(t.batch_size >= 2, "CLIP needs batch_size >= 2: the loss contrasts pairs within a batch");
    ensure!(cfg.data.val_pairs >= 2, "data.val_pairs must be at least 2");
    dist::ensure_even_shares(&[("batch_size", t.batch_size)])?;
    let setup = Setup::begin(t, &cfg.out_dir, resume, cfg)?;
    let dist = setup.dist.clone();
    // Rank 0 writes the tokenizer it trains into out_dir; the other ranks train the same one
    // into a scratch file of their own.
    let tok_out = match dist::is_main_process() {
        true => cfg.out_dir.join(checkpoint::TOKENIZER_FILE),
        false => std::env::temp_dir().join(format!("gptlab-rank-tokenizer-{}.json", std::process::id())),
    };
    let Prepared { tok_path, tokenizer, clip_cfg, files } = prepare(cfg, setup.resumed.as_deref(), &tok_out)?;
    if !dist::is_main_process() {
        let _ = std::fs::remove_file(&tok_out);
    }
    let mut model = Clip::new(&clip_cfg, setup.vs.root())?;
    model.set_compute_kind(setup.kind);
    let resumed = setup.resumed.is_some();
    let pairs_per_batch = t.batch_size as u64;
    let trainer = Trainer::new(
        setup,
        RunParts {
            model_config: &clip_cfg,
            tokenizer: Some(tok_path),
            optim: cfg.optim.clone(),
            unit: "pairs",
            units_per_step: pairs_per_batch * t.grad_accum as u64,
            baseline: Some(("chance (ln batch)".into(), (t.batch_size as f64).ln())),
        },
    )?;
    let sampler = trainer.state.sampler;
    let source = make_source(cfg, &clip_cfg, tokenizer, files, sampler.seed ^ VAL_SEED_SALT)?;
    let batches = spawn_loader(Arc::clone(&source), sampler.seed, sampler.next_batch, pairs_per_batch, t.prefetch);
    let skipped_before = match resumed {
        true => skips_logged_by(&cfg.out_dir.join("metrics.jsonl"), trainer.state.step)?,
        false => 0,
    };
    let device = trainer.device();
    let mut objective = Contrastive { model, dist, source, skipped_before, batch_size: pairs_per_batch, device };
    trainer::run(trainer, &mut objective, batches)
}

/// Training FLOPs of one image-text pair whose caption is padded to `text_len` positions:
/// 6 × parameters × positions for each tower's matmuls (attention scores are small at these
/// lengths and left out).
pub fn flops_per_pair(cfg: &ClipConfig, text_len: i64) -> f64 {
    let tower = |width: i64, layers: i64| 12.0 * (layers * width * width) as f64;
    let patches = (cfg.grid() * cfg.grid() + 1) as f64;
    6.0 * (tower(cfg.vision.width, cfg.vision.layers) * patches
        + tower(cfg.text.width, cfg.text.layers) * text_len as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_run_carries_on_from_the_skips_logged_by_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = dir.path().join("metrics.jsonl");
        assert_eq!(skips_logged_by(&metrics, 5).unwrap(), 0, "no log yet");
        let lines = [
            r#"{"step": 1, "skipped_images": 2}"#,
            r#"{"step": 2, "val_loss": 1.0}"#,
            r#"{"step": 2, "skipped_images": 5}"#,
            r#"{"step": 3, "skipped_images": 9}"#,
        ];
        std::fs::write(&metrics, lines.join("\n") + "\n").unwrap();
        assert_eq!(skips_logged_by(&metrics, 2).unwrap(), 5);
        assert_eq!(skips_logged_by(&metrics, 0).unwrap(), 0);
        assert_eq!(skips_logged_by(&metrics, 7).unwrap(), 9);
    }
}
