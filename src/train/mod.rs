//! GPT pretraining: `gptlab train --config FILE.toml [--resume]`.
//!
//! One loop serves every run: AdamW with decoupled decay on matrices, warmup + cosine, gradient
//! accumulation, global-norm clipping, periodic validation, JSONL metrics, and atomic
//! checkpoints that resume exactly (weights, moments, batch position and torch seed).

pub mod optim;
pub mod run;
pub mod schedule;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::checkpoint;
use crate::data::sampler::WindowSampler;
use crate::data::shards::{ShardMeta, TokenShards};
use crate::model::gpt::{Gelu, Gpt, GptConfig};
use optim::{AdamW, AdamWConfig};
pub use run::TrainSummary;
use schedule::LrSchedule;

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
        cfg.vocab_size = (tokenizer_vocab as i64 + 63) / 64 * 64;
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
    /// "auto" (bf16 matmuls on CUDA, fp32 on CPU), "fp32" or "bf16".
    pub dtype: String,
    /// Peak TFLOP/s for MFU; measured with a large matmul when absent.
    pub peak_tflops: Option<f64>,
    /// Batches prepared ahead by the loader thread.
    pub prefetch: usize,
}

impl TrainSection {
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
            matches!(self.dtype.as_str(), "auto" | "fp32" | "bf16"),
            "dtype must be auto, fp32 or bf16, got {:?}",
            self.dtype
        );
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
            dtype: "auto".into(),
            peak_tflops: None,
            prefetch: 4,
        }
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
        self.train.validate()
    }

    pub fn schedule(&self) -> LrSchedule {
        self.train.schedule()
    }

    pub fn checkpoint_dir(&self) -> PathBuf {
        self.out_dir.join("checkpoint")
    }

    pub fn tokens_per_step(&self, block_size: i64) -> u64 {
        (self.train.batch_size * self.train.grad_accum) as u64 * block_size as u64
    }
}

/// Matmul dtype for a run: bf16 only on CUDA.
pub fn compute_kind(dtype: &str, device: Device) -> Result<Kind> {
    match (dtype, device) {
        ("fp32", _) | ("auto", Device::Cpu) => Ok(Kind::Float),
        ("bf16", Device::Cpu) => {
            bail!("bf16 training is only supported on CUDA; use dtype = \"fp32\" on CPU")
        }
        ("auto" | "bf16", _) => Ok(Kind::BFloat16),
        (other, _) => bail!("unknown dtype {other:?}"),
    }
}

/// The GPT objective: next-token cross-entropy on random windows of the shards.
struct LanguageModeling {
    model: Gpt,
    train: Arc<WindowSampler>,
    val: WindowSampler,
    val_seed: u64,
    val_batches: u64,
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

impl run::Objective for LanguageModeling {
    type Batch = Vec<i64>;

    fn loss(&mut self, batch: Vec<i64>) -> Result<Tensor> {
        let (x, y) = self.xy(&batch, &self.train);
        self.model.loss(&x, &y, true)
    }

    fn validate(&mut self) -> Result<f64> {
        let mut total = 0.0;
        for i in 0..self.val_batches {
            let (x, y) = self.xy(&self.val.batch(self.val_seed, i), &self.val);
            total += tch::no_grad(|| self.model.loss(&x, &y, false))?.double_value(&[]);
        }
        Ok(total / self.val_batches as f64)
    }
}

const VAL_SEED_SALT: u64 = 0x005e_ed0f_da7a;

/// Trains per `cfg`; with `resume`, continues from `out_dir/checkpoint` exactly where it stopped.
pub fn train(cfg: &TrainConfig, resume: bool) -> Result<TrainSummary> {
    cfg.validate()?;
    let t = &cfg.train;
    let device = crate::device::parse_device(&t.device)?;
    crate::device::set_threads(t.threads)?;
    let kind = compute_kind(&t.dtype, device)?;
    let meta = ShardMeta::read(&cfg.data)?;
    let tokenizer_path = cfg.data.join(checkpoint::TOKENIZER_FILE);
    if !resume {
        run::refuse_existing_checkpoint(&cfg.out_dir)?;
    }
    let resumed = match resume {
        true => Some(checkpoint::resolve(&cfg.checkpoint_dir()).context("--resume needs a checkpoint in out_dir")?),
        false => None,
    };
    let gpt_cfg = match &resumed {
        Some(dir) => checkpoint::read_config(dir)?,
        None => cfg.model.resolve(meta.vocab_size)?,
    };
    ensure!(
        gpt_cfg.vocab_size as usize >= meta.vocab_size,
        "the model's vocab ({}) is smaller than the data's tokenizer ({})",
        gpt_cfg.vocab_size,
        meta.vocab_size
    );
    std::fs::create_dir_all(&cfg.out_dir).with_context(|| format!("creating {}", cfg.out_dir.display()))?;
    std::fs::write(cfg.out_dir.join("config.toml"), toml::to_string_pretty(cfg)?)?;

    tch::manual_seed(t.seed as i64);
    let vs = VarStore::new(device);
    let mut model = Gpt::new(&gpt_cfg, vs.root())?;
    model.set_compute_kind(kind);
    let mut opt = AdamW::new(&vs, cfg.optim.clone());
    let schedule = cfg.schedule();
    let state = run::initial_state(resumed.as_deref(), t, &schedule, &vs, &mut opt)?;

    let block = gpt_cfg.block_size as usize;
    let train = Arc::new(
        WindowSampler::new(TokenShards::open(&cfg.data, "train")?, t.batch_size, block).context("train split")?,
    );
    let val = WindowSampler::new(TokenShards::open(&cfg.data, "val")?, t.batch_size, block).context("val split")?;
    let batches = train.spawn(state.sampler, t.prefetch);
    let peak_tflops = match t.peak_tflops {
        Some(p) => p,
        None => crate::bench::measure_peak_tflops(device, kind)?,
    };
    let flops_per_token = gpt_cfg.flops_per_token(gpt_cfg.block_size);
    let tokens_per_step = cfg.tokens_per_step(gpt_cfg.block_size);
    let n = gpt_cfg.param_counts();
    eprintln!(
        "model: {} parameters ({} non-embedding), {:.3e} training FLOPs/token; {tokens_per_step} tokens/step on {device:?} \
         ({kind:?} matmuls), MFU against {peak_tflops:.3} TFLOP/s",
        n.total, n.non_embedding, flops_per_token
    );
    let val_seed = state.sampler.seed ^ VAL_SEED_SALT;
    let mut objective = LanguageModeling { model, train, val, val_seed, val_batches: t.eval_batches, device };
    let spec = run::RunSpec {
        section: t,
        schedule,
        out_dir: &cfg.out_dir,
        vs: &vs,
        model_config: &gpt_cfg,
        tokenizer: tokenizer_path.exists().then_some(tokenizer_path.as_path()),
        device,
        unit: "tokens",
        units_per_step: tokens_per_step,
        flops_per_unit: flops_per_token,
        peak_tflops,
        baseline: Some(("unigram baseline", meta.train_unigram_entropy)),
    };
    run::run(spec, &mut objective, &mut opt, state, batches, resumed.is_some())
}
