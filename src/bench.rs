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

/// What `bench generate` measures: decoding speed beside the per-token lower bound it measures
/// on the same model and device.
#[derive(Debug, Serialize)]
pub struct GenerateBench {
    pub model: String,
    pub device: String,
    pub dtype: String,
    pub threads: i32,
    pub params: i64,
    pub batch_size: i64,
    pub prompt_tokens: i64,
    pub new_tokens: usize,
    /// Reading the prompt and choosing the first new token.
    pub prefill_ms: f64,
    /// Each later token (a one-position step through the KV cache), median over the runs.
    pub decode_ms_per_token: f64,
    /// New tokens per second of the decode steps, all rows together.
    pub decode_tokens_per_s: f64,
    /// The model's weight matrix-vector chain for one token (each Linear and the LM head, on
    /// [B, C] inputs), the arithmetic a step cannot avoid.
    pub matvec_ms_per_token: f64,
    /// Weight bytes read per token over the measured memory bandwidth: the bound where the
    /// weights do not fit the caches (on CPUs with large caches the matvec chain is below it).
    pub weight_mb: f64,
    pub bandwidth_gb_s: f64,
    pub bandwidth_ms_per_token: f64,
    /// `decode_ms_per_token` over `matvec_ms_per_token`.
    pub ratio_to_bound: f64,
}

/// Times greedy decoding of exactly `new_tokens` tokens (end-of-text ignored) after a random
/// prompt of `prompt_tokens`, `runs` times after one warm-up, and measures the lower bounds.
pub fn bench_generate(
    model: &Gpt,
    vs: &VarStore,
    batch_size: i64,
    prompt_tokens: i64,
    new_tokens: usize,
    runs: usize,
) -> Result<GenerateBench> {
    use crate::infer::generate::{generate_batch, SampleOptions};
    let cfg = &model.cfg;
    ensure!(new_tokens >= 2, "--new-tokens must be at least 2 (the first comes from the prefill)");
    ensure!(
        prompt_tokens >= 1 && prompt_tokens + new_tokens as i64 <= cfg.block_size,
        "{prompt_tokens} prompt tokens and {new_tokens} new ones must fit the context of {}",
        cfg.block_size
    );
    let device = model.device();
    let prompts: Vec<Vec<i64>> = (0..batch_size)
        .map(|_| Vec::<i64>::try_from(&Tensor::randint(cfg.vocab_size, [prompt_tokens], (Kind::Int64, Device::Cpu))))
        .collect::<Result<_, _>>()?;
    let opts = SampleOptions { temperature: 0.0, max_new_tokens: new_tokens, ..SampleOptions::default() };
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    for run in 0..=runs {
        let start = Instant::now();
        let mut stamps = Vec::with_capacity(new_tokens);
        let mut seen = 0;
        generate_batch(model, &prompts, cfg.vocab_size, None, &opts, |row, _| {
            // A step's tokens arrive row by row; time each step at its last row.
            if row as i64 == batch_size - 1 {
                stamps.push(start.elapsed().as_secs_f64());
            }
            seen += 1;
            true
        })?;
        ensure!(seen == new_tokens * batch_size as usize, "generation stopped after {seen} tokens");
        if run > 0 {
            prefill.push(stamps[0]);
            decode.push((stamps[new_tokens - 1] - stamps[0]) / (new_tokens - 1) as f64);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (prefill, decode) = (median(prefill), median(decode));
    let kind = model.compute_kind();
    // The weights a step multiplies by: every 2-D Linear weight and the LM head.
    let vars = vs.variables();
    let mut weights: Vec<Tensor> = vars
        .iter()
        .filter(|(name, t)| t.dim() == 2 && name.contains(".h.") && name.ends_with(".weight"))
        .map(|(_, t)| t.to_kind(kind))
        .collect();
    let head = vars.get("lm_head.weight").or_else(|| vars.get("transformer.wte.weight")).map(|w| w.tr().to_kind(kind));
    weights.extend(head);
    let inputs: Vec<Tensor> =
        weights.iter().map(|w| Tensor::randn([batch_size, w.size()[0]], (kind, device))).collect();
    let chain = || {
        let mut last = None;
        for (x, w) in inputs.iter().zip(&weights) {
            last = Some(x.matmul(w));
        }
        if let Some(y) = last {
            y.sum(Kind::Float).double_value(&[]); // waits for queued device work
        }
    };
    chain();
    let reps = 50;
    let matvec = (0..3)
        .map(|_| {
            let start = Instant::now();
            (0..reps).for_each(|_| chain());
            start.elapsed().as_secs_f64() / reps as f64
        })
        .fold(f64::INFINITY, f64::min);
    let weight_bytes: i64 = weights.iter().map(|w| w.numel() as i64 * w.kind().elt_size_in_bytes() as i64).sum();
    let bandwidth = crate::device::measure_bandwidth_gb_s(device)?;
    let bandwidth_s = weight_bytes as f64 / (bandwidth * 1e9);
    Ok(GenerateBench {
        model: String::new(),
        device: format!("{device:?}"),
        dtype: format!("{kind:?}"),
        threads: tch::get_num_threads(),
        params: cfg.param_counts().total,
        batch_size,
        prompt_tokens,
        new_tokens,
        prefill_ms: prefill * 1e3,
        decode_ms_per_token: decode * 1e3,
        decode_tokens_per_s: batch_size as f64 / decode,
        matvec_ms_per_token: matvec * 1e3,
        weight_mb: weight_bytes as f64 / 1e6,
        bandwidth_gb_s: bandwidth,
        bandwidth_ms_per_token: bandwidth_s * 1e3,
        ratio_to_bound: decode / matvec,
    })
}
