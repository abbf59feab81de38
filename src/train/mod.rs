//! GPT pretraining: `gptlab train --config FILE.toml [--resume]`.
//!
//! One loop serves every run: AdamW with decoupled decay on matrices, warmup + cosine, gradient
//! accumulation, global-norm clipping, periodic validation, JSONL metrics, and atomic
//! checkpoints that resume exactly (weights, moments, batch position and torch seed).

pub mod optim;
pub mod schedule;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::checkpoint::{self, TrainState, TrainingParts};
use crate::data::sampler::{SamplerState, WindowSampler};
use crate::data::shards::{ShardMeta, TokenShards};
use crate::metrics::MetricsLog;
use crate::model::gpt::{Gelu, Gpt, GptConfig, ParamCounts};
use optim::{AdamW, AdamWConfig};
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
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        let cfg: Self =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {}", path.display(), e.message()))?;
        cfg.validate().with_context(|| format!("config {}", path.display()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let t = &self.train;
        ensure!(t.batch_size > 0 && t.grad_accum > 0, "batch_size and grad_accum must be positive");
        ensure!(t.max_steps > 0, "max_steps must be positive");
        ensure!(t.eval_batches > 0, "eval_batches must be positive");
        ensure!(
            t.log_interval > 0 && t.eval_interval > 0 && t.ckpt_interval > 0,
            "log, eval and checkpoint intervals must be positive"
        );
        ensure!(!t.lr.is_nan() && t.lr >= 0.0, "lr must be non-negative");
        ensure!(
            matches!(t.dtype.as_str(), "auto" | "fp32" | "bf16"),
            "dtype must be auto, fp32 or bf16, got {:?}",
            t.dtype
        );
        Ok(())
    }

    pub fn schedule(&self) -> LrSchedule {
        let t = &self.train;
        LrSchedule {
            lr: t.lr,
            min_lr: t.min_lr.unwrap_or(t.lr / 10.0),
            warmup_steps: t.warmup_steps,
            decay_steps: t.decay_steps.unwrap_or(t.max_steps),
        }
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

/// What a finished run reports.
#[derive(Clone, Debug, Serialize)]
pub struct TrainSummary {
    pub steps: u64,
    pub tokens_seen: u64,
    pub params: ParamCounts,
    pub flops_per_token: f64,
    pub final_train_loss: f64,
    pub final_val_loss: f64,
    pub best_val_loss: Option<f64>,
    pub tokens_per_s: f64,
    pub mfu: f64,
    pub peak_tflops: f64,
    pub elapsed_s: f64,
    pub checkpoint: PathBuf,
}

/// Tracks the first step whose loss was not finite, on the device, so the check costs no sync.
struct NonFiniteWatch {
    first_bad: Tensor,
}

impl NonFiniteWatch {
    fn new(device: Device) -> Self {
        Self { first_bad: Tensor::full([], -1, (Kind::Int64, device)) }
    }

    fn observe(&mut self, step: u64, loss: &Tensor) {
        let bad = loss.isfinite().logical_not().logical_and(&self.first_bad.lt(0));
        self.first_bad = Tensor::full([], step as i64, (Kind::Int64, loss.device())).where_self(&bad, &self.first_bad);
    }

    fn check(&self) -> Result<()> {
        let step = self.first_bad.int64_value(&[]);
        if step >= 0 {
            bail!("loss became NaN or infinite at step {step}; stopping without saving (lower the learning rate or check the data)");
        }
        Ok(())
    }
}

/// Mean loss over `batches` fixed validation batches.
fn evaluate(model: &Gpt, sampler: &WindowSampler, seed: u64, batches: u64, device: Device) -> Result<f64> {
    let mut total = 0.0;
    for i in 0..batches {
        let (x, y) = to_xy(&sampler.batch(seed, i), sampler, device);
        let loss = tch::no_grad(|| model.loss(&x, &y, false))?;
        total += loss.double_value(&[]);
    }
    Ok(total / batches as f64)
}

/// Splits a loader batch of rows of T+1 tokens into inputs and next-token targets.
fn to_xy(batch: &[i64], sampler: &WindowSampler, device: Device) -> (Tensor, Tensor) {
    let t = sampler.block_size as i64;
    let rows = Tensor::from_slice(batch).view([sampler.batch_size as i64, t + 1]).to_device(device);
    (rows.narrow(1, 0, t), rows.narrow(1, 1, t))
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
    let ckpt_dir = cfg.checkpoint_dir();

    if !resume {
        for dir in [ckpt_dir.clone(), ckpt_dir.with_file_name("checkpoint.old")] {
            ensure!(
                !dir.exists(),
                "{} already holds a checkpoint: pass --resume to continue it, or choose another out_dir",
                cfg.out_dir.display()
            );
        }
    }
    let (gpt_cfg, resumed) = if resume {
        let dir = checkpoint::resolve(&ckpt_dir).context("--resume needs a checkpoint in out_dir")?;
        let saved = checkpoint::read_config(&dir)?;
        (saved, Some(dir))
    } else {
        (cfg.model.resolve(meta.vocab_size)?, None)
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
    let mut state = TrainState {
        step: 0,
        tokens_seen: 0,
        sampler: SamplerState { seed: t.seed, next_batch: 0 },
        torch_seed: t.seed as i64,
        best_val_loss: None,
        batch_size: t.batch_size,
        grad_accum: t.grad_accum,
        schedule: schedule.clone(),
    };
    if let Some(dir) = &resumed {
        checkpoint::fill(
            &vs,
            checkpoint::read_tensors(&dir.join(checkpoint::MODEL_FILE))?,
            &dir.join(checkpoint::MODEL_FILE),
        )?;
        state = checkpoint::read_state(dir)?;
        ensure!(
            (state.batch_size, state.grad_accum) == (t.batch_size, t.grad_accum),
            "{} was trained with batch_size {} and grad_accum {}; resuming with {} and {} would change the batch stream",
            dir.display(),
            state.batch_size,
            state.grad_accum,
            t.batch_size,
            t.grad_accum
        );
        if state.schedule != schedule {
            eprintln!(
                "warning: the learning-rate schedule differs from the checkpoint's ({:?} vs {:?}); the run will not \
                 match a straight one (set decay_steps explicitly when extending max_steps)",
                schedule, state.schedule
            );
            state.schedule = schedule.clone();
        }
        opt.load_state(checkpoint::read_tensors(&dir.join(checkpoint::OPTIMIZER_FILE))?, state.step as i64)?;
        ensure!(
            state.step < t.max_steps,
            "{} is already at step {} of max_steps = {}: raise max_steps to train further",
            dir.display(),
            state.step,
            t.max_steps
        );
        eprintln!("resuming from {} at step {}", dir.display(), state.step);
    }

    let block = gpt_cfg.block_size as usize;
    let train_sampler = Arc::new(
        WindowSampler::new(TokenShards::open(&cfg.data, "train")?, t.batch_size, block).context("train split")?,
    );
    let val_sampler =
        WindowSampler::new(TokenShards::open(&cfg.data, "val")?, t.batch_size, block).context("val split")?;
    let batches = train_sampler.spawn(state.sampler, t.prefetch);
    let flops_per_token = gpt_cfg.flops_per_token(gpt_cfg.block_size);
    let peak_tflops = match t.peak_tflops {
        Some(p) => p,
        None => crate::bench::measure_peak_tflops(device, kind)?,
    };
    let tokens_per_step = cfg.tokens_per_step(gpt_cfg.block_size);
    let n = gpt_cfg.param_counts();
    eprintln!(
        "model: {} parameters ({} non-embedding), {:.3e} training FLOPs/token; {tokens_per_step} tokens/step on {device:?} \
         ({kind:?} matmuls), MFU against {peak_tflops:.3} TFLOP/s",
        n.total, n.non_embedding, flops_per_token
    );
    let mut metrics = MetricsLog::open(&cfg.out_dir.join("metrics.jsonl"), resumed.as_ref().map(|_| state.step))?;

    let bar = ProgressBar::new(t.max_steps).with_position(state.step);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg} [{elapsed_precise}<{eta_precise}]")?);
    let mut watch = NonFiniteWatch::new(device);
    let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
    let (mut interval_steps, mut interval_start) = (0u64, Instant::now());
    let run_start = Instant::now();
    let (mut last_train, mut last_val, mut last_tps, mut last_mfu) = (f64::NAN, f64::NAN, 0.0, 0.0);
    let mut saved_at = state.step;

    while state.step < t.max_steps {
        let step = state.step;
        tch::manual_seed(step_seed(state.torch_seed, step));
        let lr = schedule.at(step);
        for _ in 0..t.grad_accum {
            let batch = batches.recv().context("the batch loader stopped")?;
            let (x, y) = to_xy(&batch, &train_sampler, device);
            let loss = model.loss(&x, &y, true)? / t.grad_accum as f64;
            loss.backward();
            loss_sum += loss.detach();
        }
        state.sampler.next_batch += t.grad_accum as u64;
        let norm = opt.clip_grad_norm(t.grad_clip);
        opt.step(lr);
        opt.zero_grad();
        state.step += 1;
        state.tokens_seen += tokens_per_step;
        interval_steps += 1;
        // An infinite gradient turns weights NaN through clipping while the loss is still finite.
        watch.observe(state.step, &(&loss_sum + &norm));
        bar.set_position(state.step);

        let last = state.step == t.max_steps;
        let do_eval = state.step.is_multiple_of(t.eval_interval) || last;
        if state.step.is_multiple_of(t.log_interval) || do_eval {
            watch.check()?;
            // The watch saw the running sum; the mean over the interval is what gets logged.
            last_train = loss_sum.double_value(&[]) / interval_steps as f64;
            let dt = interval_start.elapsed().as_secs_f64();
            last_tps = (interval_steps * tokens_per_step) as f64 / dt;
            last_mfu = flops_per_token * last_tps / (peak_tflops * 1e12);
            let val = if do_eval {
                let v = evaluate(&model, &val_sampler, state.sampler.seed ^ VAL_SEED_SALT, t.eval_batches, device)?;
                state.best_val_loss = Some(state.best_val_loss.map_or(v, |b: f64| b.min(v)));
                last_val = v;
                Some(v)
            } else {
                None
            };
            bar.set_message(format!("loss {last_train:.4}{}", val.map(|v| format!(" val {v:.4}")).unwrap_or_default()));
            metrics.write(&serde_json::json!({
                "step": state.step,
                "tokens": state.tokens_seen,
                "lr": lr,
                "train_loss": last_train,
                "val_loss": val,
                "grad_norm": norm.double_value(&[]),
                "tokens_per_s": last_tps,
                "mfu": last_mfu,
                "elapsed_s": run_start.elapsed().as_secs_f64(),
            }))?;
            loss_sum = loss_sum.zero_();
            interval_steps = 0;
            interval_start = Instant::now();
        }
        if state.step.is_multiple_of(t.ckpt_interval) || last {
            watch.check()?;
            save_training(&ckpt_dir, &vs, &gpt_cfg, &tokenizer_path, &opt, &state)?;
            saved_at = state.step;
        }
    }
    bar.finish_and_clear();
    crate::plot::loss_plot(
        &cfg.out_dir.join("metrics.jsonl"),
        &cfg.out_dir.join("loss"),
        &format!("{}: loss vs tokens", cfg.out_dir.display()),
        Some(("unigram baseline", meta.train_unigram_entropy)),
    )?;
    if saved_at != state.step {
        save_training(&ckpt_dir, &vs, &gpt_cfg, &tokenizer_path, &opt, &state)?;
    }
    Ok(TrainSummary {
        steps: state.step,
        tokens_seen: state.tokens_seen,
        params: gpt_cfg.param_counts(),
        flops_per_token,
        final_train_loss: last_train,
        final_val_loss: last_val,
        best_val_loss: state.best_val_loss,
        tokens_per_s: last_tps,
        mfu: last_mfu,
        peak_tflops,
        elapsed_s: run_start.elapsed().as_secs_f64(),
        checkpoint: ckpt_dir,
    })
}

/// The torch seed of step `step`: a splitmix64 mix, so runs with nearby seeds do not share
/// dropout masks a step apart.
pub fn step_seed(base: i64, step: u64) -> i64 {
    let mut z = (base as u64) ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 1) as i64
}

fn save_training(
    dir: &Path,
    vs: &VarStore,
    cfg: &GptConfig,
    tokenizer: &Path,
    opt: &AdamW,
    state: &TrainState,
) -> Result<()> {
    ensure!(
        checkpoint::all_finite(vs),
        "weights became NaN or infinite by step {}; stopping without saving (lower the learning rate)",
        state.step
    );
    let tokenizer = tokenizer.exists().then_some(tokenizer);
    checkpoint::save(dir, vs, cfg, tokenizer, Some(TrainingParts { optimizer: opt.state_tensors(), state }))
}
