//! Throughput measurements: the device's matmul peak (the denominator of MFU), GPT training
//! tokens/s and CLIP training pairs/s for a preset on random inputs.

use std::time::Instant;

use anyhow::{ensure, Result};
use gptlab_vision::clip::{Clip, ClipConfig};
use serde::Serialize;
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::models::gpt::{Gpt, GptConfig};
use crate::train::optim::{AdamW, AdamWConfig};

/// Seconds for `steps` calls of `step` (one training step returning its loss) after `warmup`
/// untimed ones; reading the last loss waits for queued device work.
fn time_steps(warmup: usize, steps: usize, mut step: impl FnMut() -> Result<Tensor>) -> Result<f64> {
    for _ in 0..warmup {
        let _ = step()?;
    }
    let start = Instant::now();
    let mut last = None;
    for _ in 0..steps {
        last = Some(step()?);
    }
    if let Some(loss) = last {
        loss.double_value(&[]);
    }
    Ok(start.elapsed().as_secs_f64())
}

#[derive(Debug, Serialize)]
pub struct TrainBench {
    pub preset: String,
    pub device: String,
    pub dtype: String,
    pub batch_size: i64,
    pub block_size: i64,
    pub params: i64,
    pub steps: usize,
    pub tokens_per_s: f64,
    pub mfu: f64,
    pub peak_tflops: f64,
}

/// Times `steps` full training steps (forward, backward, AdamW) after `warmup` untimed ones.
pub fn bench_train(
    cfg: &GptConfig,
    device: Device,
    kind: Kind,
    batch_size: i64,
    steps: usize,
    warmup: usize,
    peak_tflops: Option<f64>,
) -> Result<TrainBench> {
    let vs = VarStore::new(device);
    let mut model = Gpt::new(cfg, vs.root())?;
    model.set_compute_kind(kind);
    let mut opt = AdamW::new(&vs, AdamWConfig::default(), &[])?;
    let t = cfg.block_size;
    let x = Tensor::randint(cfg.vocab_size, [batch_size, t], (Kind::Int64, device));
    let y = Tensor::randint(cfg.vocab_size, [batch_size, t], (Kind::Int64, device));
    let secs = time_steps(warmup, steps, || {
        let loss = model.loss(&x, &y, true)?;
        loss.backward();
        let _ = opt.clip_grad_norm(1.0);
        opt.step(1e-4);
        opt.zero_grad();
        Ok(loss)
    })?;
    let tokens_per_s = (steps as i64 * batch_size * t) as f64 / secs;
    let peak = match peak_tflops {
        Some(p) => p,
        None => crate::device::measure_peak_tflops(device, kind)?,
    };
    Ok(TrainBench {
        preset: String::new(),
        device: format!("{device:?}"),
        dtype: format!("{kind:?}"),
        batch_size,
        block_size: t,
        params: cfg.param_counts().total,
        steps,
        tokens_per_s,
        mfu: cfg.flops_per_token(t) * tokens_per_s / (peak * 1e12),
        peak_tflops: peak,
    })
}

#[derive(Debug, Serialize)]
pub struct ClipTrainBench {
    pub preset: String,
    pub device: String,
    pub dtype: String,
    pub batch_size: i64,
    pub text_len: i64,
    pub params: i64,
    pub steps: usize,
    pub pairs_per_s: f64,
}

/// Times `steps` full CLIP training steps (both towers forward and backward, AdamW with CLIP's
/// settings, the logit-scale clamp) on random pixels and random captions of `text_len` tokens
/// ending in end-of-text, after `warmup` untimed ones: what `bench-train-vs-pytorch`'s HF
/// `CLIPModel` peer runs.
pub fn bench_clip_train(
    cfg: &ClipConfig,
    device: Device,
    kind: Kind,
    batch_size: i64,
    text_len: i64,
    steps: usize,
    warmup: usize,
) -> Result<ClipTrainBench> {
    ensure!(batch_size >= 2, "CLIP needs a batch of at least 2 pairs");
    ensure!(
        (1..=cfg.text.context_length).contains(&text_len),
        "text_len must be in 1..={}, got {text_len}",
        cfg.text.context_length
    );
    let vs = VarStore::new(device);
    let mut model = Clip::new(cfg, vs.root())?;
    model.set_compute_kind(kind);
    let mut opt = AdamW::new(&vs, crate::clip::train::clip_adamw(), &[])?;
    let side = cfg.vision.image_size;
    let pixels = Tensor::randn([batch_size, 3, side, side], (Kind::Float, device));
    let eot = Tensor::full([batch_size, 1], cfg.text.eot_token_id, (Kind::Int64, device));
    // Ids above the eot id (gptlab's specials come first), so only the last position is eot.
    let words = Tensor::randint_low(
        cfg.text.eot_token_id + 1,
        cfg.text.vocab_size,
        [batch_size, text_len - 1],
        (Kind::Int64, device),
    );
    let tokens = Tensor::cat(&[words, eot], 1);
    let secs = time_steps(warmup, steps, || {
        let loss = model.loss(&pixels, &tokens)?;
        loss.backward();
        let _ = opt.clip_grad_norm(1.0);
        opt.step(1e-4);
        opt.zero_grad();
        model.clamp_logit_scale();
        Ok(loss)
    })?;
    Ok(ClipTrainBench {
        preset: String::new(),
        device: format!("{device:?}"),
        dtype: format!("{kind:?}"),
        batch_size,
        text_len,
        params: vs.trainable_variables().iter().map(|t| t.numel() as i64).sum(),
        steps,
        pairs_per_s: (steps as i64 * batch_size) as f64 / secs,
    })
}
