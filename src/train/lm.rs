//! GPT pretraining, `gptlab train --config FILE.toml [--resume]`: next-token cross-entropy on
//! random windows of token shards, through the shared [`Trainer`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::optim::AdamWConfig;
use super::trainer::{self, Evaluate, Objective, RunParts, Setup, Trainer, ValMetrics};
use super::{TrainSection, TrainSummary};
use crate::checkpoint;
use crate::data::sampler::WindowSampler;
use crate::data::shards::{tokenizer_hash, ShardMeta, TokenShards};
use crate::dist::{self, ProcessGroup};
use crate::models::gpt::{Gelu, Gpt, GptConfig};

/// The model section of a training config: a preset plus optional overrides. The vocabulary
/// always comes from the data's tokenizer, padded to a multiple of 64 (faster matmuls).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSpec {
    pub preset: String,
    pub n_layer: Option<i64>,
    pub n_head: Option<i64>,
    pub n_embd: Option<i64>,
    pub block_size: Option<i64>,
    pub dropout: Option<f64>,
    pub bias: Option<bool>,
    pub gelu: Option<Gelu>,
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self {
            preset: "micro".into(),
            n_layer: None,
            n_head: None,
            n_embd: None,
            block_size: None,
            dropout: None,
            bias: None,
            gelu: None,
        }
    }
}

impl ModelSpec {
    pub fn resolve(&self, tokenizer_vocab: usize) -> Result<GptConfig> {
        let mut cfg = GptConfig::preset(&self.preset)?;
        let pad = checkpoint::VOCAB_PADDING;
        cfg.vocab_size = (tokenizer_vocab as i64 + pad - 1) / pad * pad;
        cfg.n_layer = self.n_layer.unwrap_or(cfg.n_layer);
        cfg.n_head = self.n_head.unwrap_or(cfg.n_head);
        cfg.n_embd = self.n_embd.unwrap_or(cfg.n_embd);
        cfg.block_size = self.block_size.unwrap_or(cfg.block_size);
        cfg.dropout = self.dropout.unwrap_or(cfg.dropout);
        cfg.bias = self.bias.unwrap_or(cfg.bias);
        cfg.gelu = self.gelu.unwrap_or(cfg.gelu);
        cfg.validate()?;
        Ok(cfg)
    }
}

/// A whole training run, as read from TOML; the resolved copy is written next to the outputs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub out_dir: PathBuf,
    /// A `gptlab data tokenize` output directory.
    pub data: PathBuf,
    #[serde(default)]
    pub model: ModelSpec,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub optim: AdamWConfig,
}

impl TrainConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let cfg: Self = crate::config::read_toml(path)?;
        cfg.validate().with_context(|| format!("config {}", path.display()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        self.train.validate()?;
        self.optim.validate()
    }

    pub fn checkpoint_dir(&self) -> PathBuf {
        self.out_dir.join("checkpoint")
    }

    pub fn tokens_per_step(&self, block_size: i64) -> u64 {
        self.train.examples_per_step() * block_size as u64
    }
}

/// The GPT objective: next-token cross-entropy on random windows of the shards. Under data
/// parallelism each rank takes every `world_size`-th row of a micro-batch and every
/// `world_size`-th validation batch, so the ranks together compute what one process would.
struct LanguageModeling {
    model: Gpt,
    dist: Option<Arc<ProcessGroup>>,
    train: Arc<WindowSampler>,
    val: WindowSampler,
    val_seed: u64,
    val_batches: u64,
    /// Training FLOPs of one window of the run's context.
    flops_per_window: f64,
    device: Device,
}

impl LanguageModeling {
    /// Splits a loader batch of rows of T+1 tokens into inputs and next-token targets.
    fn xy(&self, batch: &[i64], sampler: &WindowSampler) -> (Tensor, Tensor) {
        let t = sampler.block_size as i64;
        let rows = Tensor::from_slice(batch).view([sampler.batch_size as i64, t + 1]).to_device(self.device);
        (rows.narrow(1, 0, t), rows.narrow(1, 1, t))
    }
}

impl Evaluate for LanguageModeling {
    fn validate(&mut self) -> Result<ValMetrics> {
        let total = dist::sum_over_shards(self.dist.as_deref(), self.val_batches as usize, 1, |i| {
            let (x, y) = self.xy(&self.val.batch(self.val_seed, i as u64), &self.val);
            Ok(vec![tch::no_grad(|| self.model.loss(&x, &y, false))?.double_value(&[])])
        })?;
        Ok(ValMetrics::from([("val_loss".to_string(), total[0] / self.val_batches as f64)]))
    }
}

impl Objective for LanguageModeling {
    type Batch = Vec<i64>;

    fn loss(&mut self, batch: Vec<i64>) -> Result<Tensor> {
        let (x, y) = self.xy(&batch, &self.train);
        let rank = dist::rank_world(self.dist.as_deref());
        self.model.loss(&dist::rank_rows(&x, rank), &dist::rank_rows(&y, rank), true)
        // [B / W, T]
    }

    /// Every window is a full context: batch_size × T positions, this rank's share of them.
    fn flops(&self, _: &Vec<i64>) -> f64 {
        (self.train.batch_size / dist::rank_world(self.dist.as_deref()).1) as f64 * self.flops_per_window
    }
}

const VAL_SEED_SALT: u64 = 0x005e_ed0f_da7a;

/// A resume continues the model it saved: a config whose `[model]` now resolves to another one
/// (a changed preset, width, context, or a data vocabulary of another size) is refused, naming
/// the first key that differs.
fn refuse_another_model(trained: &GptConfig, wanted: &GptConfig, dir: &Path) -> Result<()> {
    let (a, b) = (serde_json::to_value(trained)?, serde_json::to_value(wanted)?);
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        if let Some((key, old)) = a.iter().find(|(k, v)| b.get(*k) != Some(*v)) {
            let new = b.get(key).cloned().unwrap_or_default();
            bail!(
                "{} was trained with {key} = {old}; the config now gives {key} = {new}: a resume cannot change \
                 the model (vocab_size follows the data's tokenizer)",
                dir.display()
            );
        }
    }
    Ok(())
}

/// A resume trains on the ids the checkpoint's tokenizer made: shards tokenized with another
/// tokenizer are refused (checked where `meta.json` records its tokenizer).
fn refuse_another_tokenizer(meta: &ShardMeta, dir: &Path, data: &Path) -> Result<()> {
    let theirs = dir.join(checkpoint::TOKENIZER_FILE);
    if let (Some(hash), true) = (&meta.tokenizer_hash, theirs.exists()) {
        ensure!(
            *hash == tokenizer_hash(&theirs)?,
            "{} was tokenized with another tokenizer than the checkpoint's {}: resume on shards made with that \
             tokenizer, or start a new run",
            data.display(),
            theirs.display()
        );
    }
    Ok(())
}

/// Trains per `cfg`; with `resume`, continues from `out_dir/checkpoint` exactly where it stopped.
pub fn train(cfg: &TrainConfig, resume: bool) -> Result<TrainSummary> {
    cfg.validate()?;
    let meta = ShardMeta::read(&cfg.data)?;
    let tokenizer_path = cfg.data.join(checkpoint::TOKENIZER_FILE);
    dist::ensure_even_shares(&[("batch_size", cfg.train.batch_size)])?;
    let setup = Setup::begin(&cfg.train, &cfg.out_dir, resume, cfg)?;
    let dist = setup.dist.clone();
    let wanted = cfg.model.resolve(meta.vocab_size)?;
    let gpt_cfg = match &setup.resumed {
        Some(dir) => {
            let trained: GptConfig = checkpoint::read_config(dir)?;
            refuse_another_model(&trained, &wanted, dir)?;
            refuse_another_tokenizer(&meta, dir, &cfg.data)?;
            trained
        }
        None => wanted,
    };
    ensure!(
        gpt_cfg.vocab_size as usize >= meta.vocab_size,
        "the model's vocab ({}) is smaller than the data's tokenizer ({})",
        gpt_cfg.vocab_size,
        meta.vocab_size
    );
    let mut model = Gpt::new(&gpt_cfg, setup.vs.root())?;
    model.set_compute_kind(setup.kind);
    let t = &cfg.train;
    let tokens_per_step = cfg.tokens_per_step(gpt_cfg.block_size);
    let n = gpt_cfg.param_counts();
    let flops_per_token = gpt_cfg.flops_per_token(gpt_cfg.block_size);
    crate::main_eprintln!(
        "model: {} parameters ({} non-embedding), {:.3e} training FLOPs/token; {tokens_per_step} tokens/step",
        n.total,
        n.non_embedding,
        flops_per_token
    );
    let trainer = Trainer::new(
        setup,
        RunParts {
            model_config: &gpt_cfg,
            tokenizer: tokenizer_path.exists().then_some(tokenizer_path),
            optim: cfg.optim.clone(),
            unit: "tokens",
            units_per_step: tokens_per_step,
            baseline: Some(("unigram baseline".into(), meta.train_unigram_entropy)),
        },
    )?;
    let block = gpt_cfg.block_size as usize;
    let train = Arc::new(
        WindowSampler::new(TokenShards::open(&cfg.data, "train")?, t.batch_size, block).context("train split")?,
    );
    let val = WindowSampler::new(TokenShards::open(&cfg.data, "val")?, t.batch_size, block).context("val split")?;
    let sampler = trainer.state.sampler;
    let batches = train.spawn(sampler, t.prefetch);
    let mut objective = LanguageModeling {
        model,
        dist,
        train,
        val,
        val_seed: sampler.seed ^ VAL_SEED_SALT,
        val_batches: t.eval_batches,
        flops_per_window: flops_per_token * gpt_cfg.block_size as f64,
        device: trainer.device(),
    };
    trainer::run(trainer, &mut objective, batches)
}
