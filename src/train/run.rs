//! The training loop every model family shares: per-step seeding, gradient accumulation,
//! clipping, AdamW, the NaN/inf watch, periodic validation, JSONL metrics, the progress bar and
//! atomic checkpoints that resume exactly. A family supplies an [`Objective`] (its loss and
//! validation) and a stream of batches indexed from the checkpointed sampler position.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tch::{nn::VarStore, Device, Kind, Tensor};

use super::optim::AdamW;
use super::schedule::LrSchedule;
use super::TrainSection;
use crate::checkpoint::{self, TrainState, TrainingParts};
use crate::metrics::MetricsLog;

/// What a model family trains on and how it is validated.
pub trait Objective {
    type Batch;
    /// The mean loss of one micro-batch, in training mode (dropout on).
    fn loss(&mut self, batch: Self::Batch) -> Result<Tensor>;
    /// Mean validation loss on fixed held-out data; the same data at every call.
    fn validate(&mut self) -> Result<f64>;
    /// Runs after each optimizer step (CLIP clamps its logit scale here).
    fn after_step(&mut self) {}
    /// Extra fields for each metrics line (e.g. images skipped by the loader).
    fn extra_metrics(&self) -> Vec<(&'static str, serde_json::Value)> {
        Vec::new()
    }
}

/// Everything about a run that is not the objective.
pub struct RunSpec<'a, C: Serialize> {
    pub section: &'a TrainSection,
    pub schedule: LrSchedule,
    pub out_dir: &'a Path,
    pub vs: &'a VarStore,
    /// Written as the checkpoint's `config.json`.
    pub model_config: &'a C,
    /// Copied into every checkpoint.
    pub tokenizer: Option<&'a Path>,
    pub device: Device,
    /// What progress is counted in ("tokens" for GPT, "pairs" for CLIP): the metrics' x axis.
    pub unit: &'static str,
    pub units_per_step: u64,
    /// Training FLOPs per unit, for MFU.
    pub flops_per_unit: f64,
    pub peak_tflops: f64,
    /// A flat line drawn on the loss plot (e.g. the unigram entropy).
    pub baseline: Option<(&'a str, f64)>,
}

/// What a finished run reports.
#[derive(Clone, Debug, Serialize)]
pub struct TrainSummary {
    pub steps: u64,
    pub unit: &'static str,
    pub units_seen: u64,
    pub flops_per_unit: f64,
    pub final_train_loss: f64,
    pub final_val_loss: f64,
    pub best_val_loss: Option<f64>,
    pub units_per_s: f64,
    pub mfu: f64,
    pub peak_tflops: f64,
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

/// A fresh run's state, or the checkpoint's after checking that resuming it with `section`
/// continues the same run; restores `vs` and `opt` from the checkpoint.
pub fn initial_state(
    resumed: Option<&Path>,
    section: &TrainSection,
    schedule: &LrSchedule,
    vs: &VarStore,
    opt: &mut AdamW,
) -> Result<TrainState> {
    let Some(dir) = resumed else {
        return Ok(TrainState {
            step: 0,
            units_seen: 0,
            sampler: crate::data::sampler::SamplerState { seed: section.seed, next_batch: 0 },
            torch_seed: section.seed as i64,
            best_val_loss: None,
            batch_size: section.batch_size,
            grad_accum: section.grad_accum,
            schedule: schedule.clone(),
        });
    };
    let model_file = dir.join(checkpoint::MODEL_FILE);
    checkpoint::fill(vs, checkpoint::read_tensors(&model_file)?, &model_file)?;
    let mut state = checkpoint::read_state(dir)?;
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
        eprintln!(
            "warning: the learning-rate schedule differs from the checkpoint's ({:?} vs {:?}); the run will not \
             match a straight one (set decay_steps explicitly when extending max_steps)",
            schedule, state.schedule
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
    eprintln!("resuming from {} at step {}", dir.display(), state.step);
    Ok(state)
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

fn save<C: Serialize>(spec: &RunSpec<C>, opt: &AdamW, state: &TrainState) -> Result<()> {
    ensure!(
        checkpoint::all_finite(spec.vs),
        "weights became NaN or infinite by step {}; stopping without saving (lower the learning rate)",
        state.step
    );
    let training = Some(TrainingParts { optimizer: opt.state_tensors(), state });
    checkpoint::save(&spec.out_dir.join("checkpoint"), spec.vs, spec.model_config, spec.tokenizer, training)
}

/// Trains from `state` to `max_steps`, taking micro-batches from `batches` (which must start at
/// `state.sampler.next_batch`).
pub fn run<O: Objective, C: Serialize>(
    spec: RunSpec<C>,
    objective: &mut O,
    opt: &mut AdamW,
    mut state: TrainState,
    batches: Receiver<O::Batch>,
    resumed: bool,
) -> Result<TrainSummary> {
    let t = spec.section;
    let metrics_path = spec.out_dir.join("metrics.jsonl");
    let mut metrics = MetricsLog::open(&metrics_path, resumed.then_some(state.step))?;
    let bar = ProgressBar::new(t.max_steps).with_position(state.step);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg} [{elapsed_precise}<{eta_precise}]")?);
    let mut watch = NonFiniteWatch::new(spec.device);
    let mut loss_sum = Tensor::zeros([], (Kind::Float, spec.device));
    let (mut interval_steps, mut interval_start) = (0u64, Instant::now());
    let run_start = Instant::now();
    let (mut last_train, mut last_val, mut last_rate, mut last_mfu) = (f64::NAN, f64::NAN, 0.0, 0.0);
    let mut saved_at = state.step;

    while state.step < t.max_steps {
        let step = state.step;
        tch::manual_seed(step_seed(state.torch_seed, step));
        let lr = spec.schedule.at(step);
        for _ in 0..t.grad_accum {
            let batch = batches.recv().context("the batch loader stopped")?;
            let loss = objective.loss(batch)? / t.grad_accum as f64;
            loss.backward();
            loss_sum += loss.detach();
        }
        state.sampler.next_batch += t.grad_accum as u64;
        let norm = opt.clip_grad_norm(t.grad_clip);
        opt.step(lr);
        opt.zero_grad();
        objective.after_step();
        state.step += 1;
        state.units_seen += spec.units_per_step;
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
            last_rate = (interval_steps * spec.units_per_step) as f64 / interval_start.elapsed().as_secs_f64();
            last_mfu = spec.flops_per_unit * last_rate / (spec.peak_tflops * 1e12);
            let val = if do_eval {
                let v = objective.validate()?;
                state.best_val_loss = Some(state.best_val_loss.map_or(v, |b: f64| b.min(v)));
                last_val = v;
                Some(v)
            } else {
                None
            };
            bar.set_message(format!("loss {last_train:.4}{}", val.map(|v| format!(" val {v:.4}")).unwrap_or_default()));
            let mut record = serde_json::json!({
                "step": state.step,
                "lr": lr,
                "train_loss": last_train,
                "val_loss": val,
                "grad_norm": norm.double_value(&[]),
                "mfu": last_mfu,
                "elapsed_s": run_start.elapsed().as_secs_f64(),
            });
            record[spec.unit] = state.units_seen.into();
            record[format!("{}_per_s", spec.unit)] = last_rate.into();
            for (key, value) in objective.extra_metrics() {
                record[key] = value;
            }
            metrics.write(&record)?;
            loss_sum = loss_sum.zero_();
            interval_steps = 0;
            interval_start = Instant::now();
        }
        if state.step.is_multiple_of(t.ckpt_interval) || last {
            watch.check()?;
            save(&spec, opt, &state)?;
            saved_at = state.step;
        }
    }
    bar.finish_and_clear();
    if saved_at != state.step {
        save(&spec, opt, &state)?;
    }
    crate::plot::loss_plot(
        &metrics_path,
        &spec.out_dir.join("loss"),
        &format!("{}: loss vs {}", spec.out_dir.display(), spec.unit),
        spec.unit,
        spec.baseline,
    )?;
    Ok(TrainSummary {
        steps: state.step,
        unit: spec.unit,
        units_seen: state.units_seen,
        flops_per_unit: spec.flops_per_unit,
        final_train_loss: last_train,
        final_val_loss: last_val,
        best_val_loss: state.best_val_loss,
        units_per_s: last_rate,
        mfu: last_mfu,
        peak_tflops: spec.peak_tflops,
        elapsed_s: run_start.elapsed().as_secs_f64(),
        checkpoint: spec.out_dir.join("checkpoint"),
    })
}
