//! Throughput measurements: the device's matmul peak (the denominator of MFU) and training
//! tokens/s for a preset on random tokens.

use std::time::Instant;

use anyhow::Result;
use serde::Serialize;
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::models::gpt::{Gpt, GptConfig};
use crate::train::optim::{AdamW, AdamWConfig};

/// Achieved TFLOP/s of a large square matmul in `kind`: the practical peak MFU is measured
/// against (vendor peaks are rarely reachable). 1024² on CPU, 8192² on CUDA.
pub fn measure_peak_tflops(device: Device, kind: Kind) -> Result<f64> {
    let n: i64 = if device.is_cuda() { 8192 } else { 1024 };
    let a = Tensor::randn([n, n], (kind, device));
    let b = Tensor::randn([n, n], (kind, device));
    let run = |reps: usize| {
        let mut c = a.matmul(&b);
        for _ in 1..reps {
            c = a.matmul(&b);
        }
        c.sum(Kind::Float).double_value(&[]) // forces completion on CUDA
    };
    run(2);
    let reps = if device.is_cuda() { 50 } else { 5 };
    // Best of five timings: the peak is what the device can do, not what a noisy moment gave.
    let secs = (0..5)
        .map(|_| {
            let start = Instant::now();
            run(reps);
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    Ok(2.0 * (n as f64).powi(3) * reps as f64 / secs / 1e12)
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
    let mut step = || -> Result<Tensor> {
        let loss = model.loss(&x, &y, true)?;
        loss.backward();
        let _ = opt.clip_grad_norm(1.0);
        opt.step(1e-4);
        opt.zero_grad();
        Ok(loss)
    };
    for _ in 0..warmup {
        let _ = step()?;
    }
    let start = Instant::now();
    let mut last = Tensor::zeros([], (Kind::Float, device));
    for _ in 0..steps {
        last = step()?;
    }
    last.double_value(&[]); // sync
    let secs = start.elapsed().as_secs_f64();
    let tokens_per_s = (steps as i64 * batch_size * t) as f64 / secs;
    let peak = match peak_tflops {
        Some(p) => p,
        None => measure_peak_tflops(device, kind)?,
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
