//! The Trainer every objective drives: per-step seeding, gradient accumulation, clipping,
//! AdamW with parameter groups, the NaN/inf watch, periodic validation with named metrics,
//! JSONL metrics, the progress bar and atomic checkpoints that resume exactly.
//!
//! A supervised objective (GPT pretraining, CLIP, later VLM stages and fine-tuning) implements
//! [`Objective`] and hands a batch stream to [`run`]. An objective with its own loop (PPO, which
//! alternates rollouts and updates) calls [`Trainer::step`] and [`Trainer::end_step`] itself.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use gptlab_nn::Dtype;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tch::{nn::VarStore, Device, Kind, Tensor};

use super::optim::{AdamW, AdamWConfig};
use super::schedule::LrSchedule;
use super::{TrainSection, TrainState};
use crate::checkpoint::{self, ModelConfig, TrainingParts};
use crate::data::sampler::SamplerState;
use crate::dist::{DistEnv, ProcessGroup};
use crate::metrics::MetricsLog;

/// Validation results by name; always holds `val_loss`, and whatever else an objective measures
/// (accuracy, reward, KL). Every entry lands in `metrics.jsonl`.
pub type ValMetrics = BTreeMap<String, f64>;

/// How a run is validated and what it adds to each metrics line.
pub trait Evaluate {
    /// Metrics on fixed held-out data (the same data at every call), with `val_loss` among them.
    fn validate(&mut self) -> Result<ValMetrics>;
    /// Extra fields for each metrics line (e.g. images skipped by the loader).
    fn extra_metrics(&self) -> Vec<(&'static str, serde_json::Value)> {
        Vec::new()
    }
    /// Runs once after the last optimizer step, before the final validation and checkpoint
    /// (the reward model fits its offset here, so the saved weights carry it).
    fn before_final_checkpoint(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What a supervised model family trains on.
pub trait Objective: Evaluate {
    type Batch;
    /// The mean loss of one micro-batch, in training mode (dropout on).
    fn loss(&mut self, batch: Self::Batch) -> Result<Tensor>;
    /// Training FLOPs (forward and backward) of `batch`, counting the positions actually
    /// processed, for MFU.
    fn flops(&self, batch: &Self::Batch) -> f64;
    /// Runs after each optimizer step (CLIP clamps its logit scale here).
    fn after_step(&mut self) {}
}

/// One micro-batch's loss as this rank computed it: a sum of parts, each the mean of some terms
/// (tokens, examples, pairs). Under data parallelism a part whose ranks hold different numbers of
/// terms is weighted by its count, so that the ranks' averaged gradients are those of the mean over
/// every term of the micro-batch, as one process computes it.
pub struct MicroLoss {
    /// (mean loss, its number of terms on this rank; `None` when every rank's share is equal or
    /// the loss already covers the whole micro-batch).
    parts: Vec<(Tensor, Option<f64>)>,
    /// Training FLOPs this rank spent on the micro-batch.
    pub flops: f64,
}

impl MicroLoss {
    /// A loss whose ranks hold equal shares of the micro-batch (or every rank the whole of it).
    pub fn even(loss: Tensor, flops: f64) -> Self {
        Self { parts: vec![(loss, None)], flops }
    }

    /// A loss that averages `count` terms on this rank, where ranks may hold different numbers.
    pub fn mean_of(loss: Tensor, count: f64, flops: f64) -> Self {
        Self { parts: vec![(loss, Some(count))], flops }
    }

    /// Adds another part: `loss`, the mean of `count` terms on this rank (or an even share).
    pub fn plus(mut self, loss: Tensor, count: Option<f64>) -> Self {
        self.parts.push((loss, count));
        self
    }

    /// Scales every part's count by `weight` (0 for a rank whose share of a micro-batch is a
    /// stand-in row, [`crate::dist::rank_share`]).
    pub fn weighted(mut self, weight: f64) -> Self {
        for (_, count) in &mut self.parts {
            *count = count.map(|c| c * weight);
        }
        self
    }

    /// The loss this rank backpropagates: each counted part times count × W / (the count over
    /// the ranks), so the mean of the ranks' gradients (what [`ProcessGroup::all_reduce_mean`]
    /// forms) weighs every term alike. One collective sums the counts of all parts. A part of
    /// no terms on this rank (a stand-in row, or records with nothing trained, whose mean is
    /// 0/0) adds nothing, as it adds nothing to one process's sum; `None` when no part is left.
    fn combine(self, group: Option<&ProcessGroup>) -> Result<Option<Tensor>> {
        let counts: Vec<f64> = self.parts.iter().filter_map(|(_, c)| *c).collect();
        let totals = if counts.is_empty() { counts } else { crate::dist::sum_ranks(group, counts)? };
        let world = group.map_or(1, |g| g.world_size) as f64;
        let mut totals = totals.into_iter();
        let mut sum: Option<Tensor> = None;
        for (loss, count) in self.parts {
            let part = match count {
                None => loss,
                Some(n) => {
                    let total = totals.next().context("a count for every counted part")?;
                    if n == 0.0 {
                        continue;
                    }
                    if group.is_some() {
                        loss * (n * world / total)
                    } else {
                        loss
                    }
                }
            };
            sum = Some(match sum {
                Some(s) => s + part,
                None => part,
            });
        }
        Ok(sum)
    }
}

/// The first part of a run's set-up, before the model exists: device and threads, the
/// checkpoint check (a fresh run never replaces one; a resume needs one), the output directory
/// with the resolved config, the torch seed of the model's init, and the variable store the
/// model is built in.
pub struct Setup {
    pub section: TrainSection,
    pub out_dir: PathBuf,
    pub device: Device,
    /// Matmul kind: the checkpoint's on resume, else the config's resolved for the device.
    pub kind: Kind,
    /// The checkpoint a resumed run continues, and the state it saved.
    pub resumed: Option<PathBuf>,
    saved_state: Option<TrainState>,
    pub vs: VarStore,
    /// The data-parallel group this process is a rank of, when launched as one.
    pub dist: Option<Arc<ProcessGroup>>,
    /// The advisory lock on `out_dir`, held for the whole run by rank 0 (the OS releases it on a
    /// crash).
    lock: Option<File>,
}

impl Setup {
    /// Joins the data-parallel group its launch environment describes, if any (each rank takes
    /// every `world_size`-th row of a micro-batch). Rank 0 alone locks `out_dir` and writes
    /// there.
    pub fn begin<C: Serialize>(section: &TrainSection, out_dir: &Path, resume: bool, resolved: &C) -> Result<Self> {
        section.validate()?;
        let device = crate::device::parse_device(&section.device)?;
        crate::device::set_threads(section.threads)?;
        let dist = match DistEnv::from_env()? {
            Some(env) => {
                let group = ProcessGroup::join(&env, crate::dist::timeout()?, device)?;
                if group.is_main() {
                    eprintln!("data parallel: {} ranks over {}", group.world_size, group.backend);
                }
                Some(Arc::new(group))
            }
            None => None,
        };
        let main = dist.as_ref().is_none_or(|g| g.is_main());
        std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
        let lock = main.then(|| lock_out_dir(out_dir)).transpose()?;
        if !resume {
            refuse_existing_checkpoint(out_dir)?;
        }
        let resumed = match resume {
            true => Some(
                checkpoint::resolve(&out_dir.join("checkpoint")).context("--resume needs a checkpoint in out_dir")?,
            ),
            false => None,
        };
        let saved_state: Option<TrainState> = resumed.as_deref().map(checkpoint::read_state).transpose()?;
        let mut kind = section.dtype.compute_kind(device);
        if let Some(saved) = saved_state.as_ref().and_then(|s| s.dtype.as_deref()) {
            let saved_kind = Dtype::parse(saved)?.compute_kind(device);
            if saved_kind != kind {
                crate::main_eprintln!(
                    "warning: the checkpoint trained in {saved}; resuming in {saved} (train.dtype is ignored)"
                );
                kind = saved_kind;
            }
        }
        if main {
            std::fs::write(out_dir.join("config.toml"), toml::to_string_pretty(resolved)?)?;
        }
        tch::manual_seed(section.seed as i64);
        Ok(Self {
            section: section.clone(),
            out_dir: out_dir.to_path_buf(),
            device,
            kind,
            resumed,
            saved_state,
            vs: VarStore::new(device),
            dist,
            lock,
        })
    }
}

/// Takes the run's lock on `out_dir` (`out_dir/.lock`, holding the owner's pid), so that two
/// runs started into one directory cannot both write its checkpoint and metrics.
fn lock_out_dir(out_dir: &Path) -> Result<File> {
    let path = out_dir.join(".lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let owner = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "{} is in use by another gptlab run (pid {}); wait for it to end or choose another out_dir",
                out_dir.display(),
                owner.trim()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
    }
    file.set_len(0)?;
    file.write_all(std::process::id().to_string().as_bytes())?;
    Ok(file)
}

/// The family-specific rest of a run's set-up, once the model is built in [`Setup::vs`].
pub struct RunParts<'a, C: ModelConfig> {
    /// Written as every checkpoint's `config.json`.
    pub model_config: &'a C,
    /// Copied into every checkpoint.
    pub tokenizer: Option<PathBuf>,
    pub optim: AdamWConfig,
    /// What progress is counted in ("tokens" for GPT, "pairs" for CLIP): the metrics' x axis.
    pub unit: &'static str,
    pub units_per_step: u64,
    /// A flat line drawn on the loss plot (e.g. the unigram entropy).
    pub baseline: Option<(String, f64)>,
}

/// What a finished run reports.
#[derive(Clone, Debug, Serialize)]
pub struct TrainSummary {
    pub steps: u64,
    pub unit: &'static str,
    pub units_seen: u64,
    /// Training FLOPs per unit over the run's last logging interval.
    pub flops_per_unit: f64,
    pub final_train_loss: f64,
    pub final_val_loss: f64,
    pub best_val_loss: Option<f64>,
    pub units_per_s: f64,
    pub mfu: f64,
    pub peak_tflops: f64,
    /// `fp32` or `bf16`: the matmul precision the run trained in.
    pub dtype: &'static str,
    pub elapsed_s: f64,
    pub checkpoint: PathBuf,
}

/// A fresh run never replaces an existing one.
pub fn refuse_existing_checkpoint(out_dir: &Path) -> Result<()> {
    let ckpt = out_dir.join("checkpoint");
    for dir in [ckpt.clone(), ckpt.with_file_name("checkpoint.old")] {
        ensure!(
            !dir.exists(),
            "{} already holds a checkpoint: pass --resume to continue it, or choose another out_dir",
            out_dir.display()
        );
    }
    Ok(())
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

/// The torch seed of step `step`: a splitmix64 mix, so runs with nearby seeds do not share
/// dropout masks a step apart.
pub fn step_seed(base: i64, step: u64) -> i64 {
    let mut z = (base as u64) ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 1) as i64
}

/// A run in progress: model variables, optimizer, state and the bookkeeping of its intervals.
pub struct Trainer {
    section: TrainSection,
    schedule: LrSchedule,
    out_dir: PathBuf,
    vs: VarStore,
    /// The tagged `config.json` every checkpoint gets.
    model_config: serde_json::Value,
    tokenizer: Option<PathBuf>,
    device: Device,
    kind: Kind,
    unit: &'static str,
    units_per_step: u64,
    peak_tflops: f64,
    baseline: Option<(String, f64)>,
    opt: AdamW,
    /// Where the run stands; what a checkpoint saves beside weights and moments.
    pub state: TrainState,
    /// The data-parallel group, which averages the optimizer's gradients after each backward
    /// pass.
    dist: Option<Arc<ProcessGroup>>,
    /// Whether every parameter has had a gradient on every rank (the same on all of them).
    every_grad_defined: bool,
    /// Rank 0's metrics log (other ranks write nothing).
    metrics: Option<MetricsLog>,
    bar: ProgressBar,
    watch: NonFiniteWatch,
    /// The last step's learning rate and gradient norm (before clipping).
    lr: f64,
    grad_norm: Tensor,
    /// Loss and FLOPs summed over the steps since the last metrics line.
    loss_sum: Tensor,
    interval_flops: f64,
    interval_steps: u64,
    interval_start: Instant,
    run_start: Instant,
    last_train: f64,
    last_val: f64,
    last_rate: f64,
    last_mfu: f64,
    last_flops_per_unit: f64,
    saved_at: u64,
    /// Validation metrics besides `val_loss` this run has logged; each gets its own plot.
    val_keys: std::collections::BTreeSet<String>,
    _lock: Option<File>,
}

impl Trainer {
    /// Builds the optimizer over `setup.vs` (with the section's parameter groups), restores
    /// weights, moments and state when resuming, measures the peak MFU is counted against
    /// (unless the config gives it), and opens the metrics log.
    pub fn new<C: ModelConfig>(setup: Setup, parts: RunParts<C>) -> Result<Self> {
        let Setup { section, out_dir, device, kind, resumed, saved_state, vs, dist, lock } = setup;
        let main = dist.as_ref().is_none_or(|g| g.is_main());
        let mut opt = AdamW::new(&vs, parts.optim, &section.groups)?;
        let schedule = section.schedule();
        let resumed_from = resumed.as_deref().zip(saved_state);
        let mut state = initial_state(resumed_from, &section, &schedule, &vs, &mut opt)?;
        if let Some(group) = &dist {
            group.broadcast_from_main(&opt.parameters())?;
        }
        state.dtype = Some(Dtype::name_of(kind).to_string());
        let (peak_tflops, source) = match section.peak_tflops {
            Some(p) => (p, "configured"),
            None => (crate::device::measure_peak_tflops(device, kind)?, "measured"),
        };
        let dtype = Dtype::name_of(kind);
        if main {
            eprintln!(
                "training in {dtype} on {device:?}; MFU against a {source} {peak_tflops:.3} TFLOP/s {dtype} peak"
            );
        }
        let metrics = main
            .then(|| MetricsLog::open(&out_dir.join("metrics.jsonl"), resumed.is_some().then_some(state.step)))
            .transpose()?;
        let bar =
            if main { ProgressBar::new(section.max_steps) } else { ProgressBar::hidden() }.with_position(state.step);
        bar.set_style(ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps {msg} [{elapsed_precise}<{eta_precise}]",
        )?);
        Ok(Self {
            schedule,
            out_dir,
            vs,
            model_config: checkpoint::tagged_config(parts.model_config)?,
            tokenizer: parts.tokenizer,
            device,
            kind,
            unit: parts.unit,
            units_per_step: parts.units_per_step,
            peak_tflops,
            baseline: parts.baseline,
            opt,
            dist,
            every_grad_defined: false,
            metrics,
            bar,
            watch: NonFiniteWatch::new(device),
            lr: 0.0,
            grad_norm: Tensor::zeros([], (Kind::Float, device)),
            loss_sum: Tensor::zeros([], (Kind::Float, device)),
            interval_flops: 0.0,
            interval_steps: 0,
            interval_start: Instant::now(),
            run_start: Instant::now(),
            last_train: f64::NAN,
            last_val: f64::NAN,
            last_rate: 0.0,
            last_mfu: 0.0,
            last_flops_per_unit: 0.0,
            val_keys: Default::default(),
            _lock: lock,
            saved_at: state.step,
            state,
            section,
        })
    }

    pub fn section(&self) -> &TrainSection {
        &self.section
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Whether `max_steps` is reached.
    pub fn is_done(&self) -> bool {
        self.state.step >= self.section.max_steps
    }

    /// This process's rank and the number of ranks (0 of 1 outside a data-parallel group).
    pub fn rank_world(&self) -> (usize, usize) {
        crate::dist::rank_world(self.dist.as_deref())
    }

    /// The data-parallel group, for objectives that shard their validation or rollouts.
    pub fn group(&self) -> Option<Arc<ProcessGroup>> {
        self.dist.clone()
    }

    /// One optimizer step. `micro_batch(i)` returns this rank's loss of micro-batch `i` of
    /// `grad_accum` and its training FLOPs; gradients accumulate over them, are clipped, and
    /// AdamW steps at the schedule's learning rate. The torch seed is the step's own, so dropout
    /// replays exactly on resume.
    pub fn step(&mut self, mut micro_batch: impl FnMut(usize) -> Result<MicroLoss>) -> Result<()> {
        let accum = self.section.grad_accum;
        tch::manual_seed(step_seed(self.state.torch_seed, self.state.step));
        self.lr = self.schedule.at(self.state.step);
        for i in 0..accum {
            let micro = micro_batch(i)?;
            self.interval_flops += micro.flops;
            if let Some(loss) = micro.combine(self.dist.as_deref())? {
                let loss = loss / accum as f64;
                loss.backward();
                self.loss_sum += loss.detach();
            }
        }
        self.state.sampler.next_batch += accum as u64;
        if let Some(group) = self.dist.clone() {
            self.average_gradients(&group)?;
        }
        self.grad_norm = self.opt.clip_grad_norm(self.section.grad_clip);
        self.opt.step(self.lr);
        self.opt.zero_grad();
        self.state.step += 1;
        self.state.units_seen += self.units_per_step;
        self.interval_steps += 1;
        // An infinite gradient turns weights NaN through clipping while the loss is still finite.
        self.watch.observe(self.state.step, &(&self.loss_sum + &self.grad_norm));
        self.bar.set_position(self.state.step);
        Ok(())
    }

    /// Averages the gradients over the ranks. A parameter may have a gradient on some ranks and
    /// not others (a task head only one rank's rows used, a projector only one rank's images
    /// reached): one collective finds which parameters any rank has one for, a rank without
    /// gives zeros for those, and the parameters no rank has one for keep none, so AdamW skips
    /// them as it would in one process. Once every parameter has had a gradient, every rank
    /// keeps one (zeroing keeps a gradient defined) and the check is skipped.
    fn average_gradients(&mut self, group: &ProcessGroup) -> Result<()> {
        let params = self.opt.parameters();
        if self.every_grad_defined {
            return group.all_reduce_mean(&params.iter().map(Tensor::grad).collect::<Vec<_>>());
        }
        let has: Vec<f64> = params.iter().map(|p| f64::from(u8::from(p.grad().defined()))).collect();
        let anywhere = group.sum(&has)?;
        self.every_grad_defined = anywhere.iter().all(|&a| a > 0.0);
        let missing: Vec<&Tensor> = params
            .iter()
            .zip(&has)
            .zip(&anywhere)
            .filter(|((_, &h), &a)| h == 0.0 && a > 0.0)
            .map(|((p, _), _)| p)
            .collect();
        if let Some(zero) = missing.iter().map(|p| p.sum(Kind::Float) * 0.0).reduce(|a, b| a + b) {
            zero.backward(); // defines each missing gradient as zeros
        }
        let grads: Vec<Tensor> =
            params.iter().zip(&anywhere).filter(|(_, &a)| a > 0.0).map(|(p, _)| p.grad()).collect();
        group.all_reduce_mean(&grads)
    }

    /// After a step: a metrics line every `log_interval` steps, validation every
    /// `eval_interval`, a checkpoint every `ckpt_interval`, and all three at the last step.
    pub fn end_step(&mut self, eval: &mut dyn Evaluate) -> Result<()> {
        let step = self.state.step;
        let last = step == self.section.max_steps;
        if last {
            eval.before_final_checkpoint()?;
        }
        let t = &self.section;
        let do_eval = step.is_multiple_of(t.eval_interval) || last;
        if step.is_multiple_of(t.log_interval) || do_eval {
            self.log(eval, do_eval)?;
        }
        if step.is_multiple_of(self.section.ckpt_interval) || last {
            self.watch.check()?;
            self.save()?;
        }
        Ok(())
    }

    fn log(&mut self, eval: &mut dyn Evaluate, validate: bool) -> Result<()> {
        self.watch.check()?;
        let steps = self.interval_steps.max(1);
        let secs = self.interval_start.elapsed().as_secs_f64();
        // The watch saw the running sum; the mean over the interval is what gets logged, over
        // every rank's rows.
        self.last_train = self.loss_sum.double_value(&[]) / steps as f64;
        if let Some(group) = &self.dist {
            self.last_train = group.sum(&[self.last_train])?[0] / group.world_size as f64;
        }
        self.last_rate = (steps * self.units_per_step) as f64 / secs;
        self.last_mfu = self.interval_flops / secs / (self.peak_tflops * 1e12);
        self.last_flops_per_unit = self.interval_flops / (steps * self.units_per_step) as f64;
        let mut record = serde_json::json!({
            "step": self.state.step,
            "lr": self.lr,
            "train_loss": self.last_train,
            "val_loss": null,
            "grad_norm": self.grad_norm.double_value(&[]),
            "mfu": self.last_mfu,
            "flops_per_step": self.interval_flops / steps as f64,
            // How many steps train_loss averages: fewer than log_interval right after a resume.
            "train_loss_steps": steps,
            "elapsed_s": self.run_start.elapsed().as_secs_f64(),
        });
        record[self.unit] = self.state.units_seen.into();
        record[format!("{}_per_s", self.unit)] = self.last_rate.into();
        let mut message = format!("loss {:.4}", self.last_train);
        if validate {
            let metrics = eval.validate()?;
            let v = *metrics.get("val_loss").context("an objective's validation must report val_loss")?;
            self.state.best_val_loss = Some(self.state.best_val_loss.map_or(v, |b: f64| b.min(v)));
            self.last_val = v;
            message += &format!(" val {v:.4}");
            for (key, value) in metrics {
                if key != "val_loss" {
                    self.val_keys.insert(key.clone());
                }
                record[key] = value.into();
            }
        }
        for (key, value) in eval.extra_metrics() {
            record[key] = value;
        }
        self.bar.set_message(message);
        if let Some(metrics) = &mut self.metrics {
            metrics.write(&record)?;
        }
        self.loss_sum = self.loss_sum.zero_();
        self.interval_flops = 0.0;
        self.interval_steps = 0;
        self.interval_start = Instant::now();
        Ok(())
    }

    /// Writes a checkpoint (rank 0; the other ranks hold the same weights and state).
    fn save(&mut self) -> Result<()> {
        self.saved_at = self.state.step;
        if self.metrics.is_none() {
            return Ok(());
        }
        ensure!(
            checkpoint::all_finite(&self.vs),
            "weights became NaN or infinite by step {}; stopping without saving (lower the learning rate)",
            self.state.step
        );
        let training = Some(TrainingParts { optimizer: self.opt.state_tensors(), state: &self.state });
        checkpoint::save(
            &self.out_dir.join("checkpoint"),
            &self.vs,
            &self.model_config,
            self.tokenizer.as_deref(),
            training,
        )?;
        Ok(())
    }

    /// Saves what the last checkpoint missed, draws the plots (rank 0), and reports.
    pub fn finish(mut self) -> Result<TrainSummary> {
        self.bar.finish_and_clear();
        if self.saved_at != self.state.step {
            self.watch.check()?;
            self.save()?;
        }
        if self.metrics.is_some() {
            self.plot()?;
        }
        Ok(TrainSummary {
            steps: self.state.step,
            unit: self.unit,
            units_seen: self.state.units_seen,
            flops_per_unit: self.last_flops_per_unit,
            final_train_loss: self.last_train,
            final_val_loss: self.last_val,
            best_val_loss: self.state.best_val_loss,
            units_per_s: self.last_rate,
            mfu: self.last_mfu,
            peak_tflops: self.peak_tflops,
            dtype: Dtype::name_of(self.kind),
            elapsed_s: self.run_start.elapsed().as_secs_f64(),
            checkpoint: self.out_dir.join("checkpoint"),
        })
    }

    /// The loss plot and one plot per other validation metric (`{name}.png`).
    fn plot(&self) -> Result<()> {
        let baseline = self.baseline.as_ref().map(|(name, v)| (name.as_str(), *v));
        crate::plot::loss_plot(
            &self.out_dir.join("metrics.jsonl"),
            &self.out_dir.join("loss"),
            &format!("{}: loss vs {}", self.out_dir.display(), self.unit),
            self.unit,
            baseline,
        )?;
        for key in &self.val_keys {
            crate::plot::metric_plot(
                &self.out_dir.join("metrics.jsonl"),
                &self.out_dir.join(key),
                &format!("{}: {key} vs {}", self.out_dir.display(), self.unit),
                self.unit,
                key,
            )?;
        }
        Ok(())
    }
}

/// The supervised loop: trains from the trainer's state to `max_steps`, taking micro-batches
/// from `batches` (which must start at `trainer.state.sampler.next_batch`).
pub fn run<O: Objective>(mut trainer: Trainer, objective: &mut O, batches: Receiver<O::Batch>) -> Result<TrainSummary> {
    while !trainer.is_done() {
        trainer.step(|_| {
            let batch = batches.recv().context("the batch loader stopped")?;
            let flops = objective.flops(&batch);
            Ok(MicroLoss::even(objective.loss(batch)?, flops))
        })?;
        objective.after_step();
        trainer.end_step(objective)?;
    }
    trainer.finish()
}

/// The supervised loop over `n` in-memory examples taken in seeded epochs
/// ([`crate::data::sampler::epoch_batch`]): micro-batch `i` of a step is batch `next_batch + i`,
/// so a resumed run continues the same sequence. `micro` turns this rank's examples of a batch
/// (every `world_size`-th, [`crate::dist::rank_share`]) into their loss and training FLOPs;
/// the loss's counts are weighted by the share's weight.
pub fn epoch_loop<O: Evaluate>(
    mut trainer: Trainer,
    obj: &mut O,
    n: usize,
    batch_size: usize,
    micro: impl Fn(&O, &[usize]) -> Result<MicroLoss>,
) -> Result<TrainSummary> {
    let seed = trainer.state.sampler.seed;
    let rank = trainer.rank_world();
    while !trainer.is_done() {
        let next = trainer.state.sampler.next_batch;
        trainer.step(|i| {
            let batch = crate::data::sampler::epoch_batch(n, seed, next + i as u64, batch_size);
            let (mine, weight) = crate::dist::rank_share(&batch, rank);
            Ok(micro(obj, &mine)?.weighted(weight))
        })?;
        trainer.end_step(obj)?;
    }
    trainer.finish()
}

/// A fresh run's state, or the checkpoint's (its directory and saved state) after checking that
/// resuming it with `section` continues the same run; restores `vs` and `opt` from the checkpoint.
fn initial_state(
    resumed: Option<(&Path, TrainState)>,
    section: &TrainSection,
    schedule: &LrSchedule,
    vs: &VarStore,
    opt: &mut AdamW,
) -> Result<TrainState> {
    let Some((dir, mut state)) = resumed else {
        return Ok(TrainState {
            step: 0,
            units_seen: 0,
            sampler: SamplerState { seed: section.seed, next_batch: 0 },
            torch_seed: section.seed as i64,
            best_val_loss: None,
            batch_size: section.batch_size,
            grad_accum: section.grad_accum,
            schedule: schedule.clone(),
            dtype: None,
        });
    };
    let model_file = dir.join(checkpoint::MODEL_FILE);
    checkpoint::fill(vs, checkpoint::read_tensors(&model_file)?, &model_file)?;
    ensure!(
        (state.batch_size, state.grad_accum) == (section.batch_size, section.grad_accum),
        "{} was trained with batch_size {} and grad_accum {}; resuming with {} and {} would change the batch stream",
        dir.display(),
        state.batch_size,
        state.grad_accum,
        section.batch_size,
        section.grad_accum
    );
    if &state.schedule != schedule {
        crate::main_eprintln!(
            "warning: the learning-rate schedule differs from the checkpoint's ({:?} vs {:?}); the run will not \
             match a straight one (set decay_steps explicitly when extending max_steps)",
            schedule,
            state.schedule
        );
        state.schedule = schedule.clone();
    }
    opt.load_state(checkpoint::read_tensors(&dir.join(checkpoint::OPTIMIZER_FILE))?, state.step as i64)?;
    ensure!(
        state.step < section.max_steps,
        "{} is already at step {} of max_steps = {}: raise max_steps to train further",
        dir.display(),
        state.step,
        section.max_steps
    );
    crate::main_eprintln!("resuming from {} at step {}", dir.display(), state.step);
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_part_of_no_terms_adds_nothing_not_its_nan_mean() -> Result<()> {
        let (nan, loss) = (Tensor::from(f64::NAN), Tensor::from(1.5));
        assert!(MicroLoss::mean_of(nan.shallow_clone(), 0.0, 0.0).combine(None)?.is_none());
        let both = MicroLoss::mean_of(nan, 0.0, 0.0).plus(loss, Some(2.0)).combine(None)?.context("a loss")?;
        assert_eq!(both.double_value(&[]), 1.5);
        let weightless = MicroLoss::mean_of(Tensor::from(2.0), 3.0, 0.0).weighted(0.0);
        assert!(weightless.combine(None)?.is_none(), "a stand-in row's loss counts no terms");
        Ok(())
    }
}
