//! `gptlab bench`: the matmul peak MFU is measured against, training throughput, and the CLIP
//! loader against training.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use gptlab::models::gpt::{Gpt, GptConfig};
use gptlab::train::Dtype;
use gptlab::{bench, clip};

use super::DeviceArgs;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Achieved matmul TFLOP/s in fp32 and in bf16: the peaks MFU is measured against
    Peak {
        #[command(flatten)]
        dev: DeviceArgs,
    },
    /// Images/s of a CLIP config's data loader against its training steps
    ClipLoader {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value_t = 10)]
        batches: u64,
    },
    /// CLIP training pairs/s of a preset on random pixels and captions of --text-len tokens
    ClipTrain {
        #[arg(long, default_value = "small")]
        preset: String,
        #[arg(long, default_value_t = 32)]
        batch_size: i64,
        /// Caption length in tokens, end-of-text included
        #[arg(long, default_value_t = 20)]
        text_len: i64,
        /// Text vocabulary (the tokenizer's size)
        #[arg(long, default_value_t = 512)]
        vocab_size: i64,
        #[arg(long, default_value_t = 20)]
        steps: usize,
        #[arg(long, default_value = "auto")]
        dtype: String,
        #[arg(long, default_value_t = 1337)]
        seed: u64,
        #[command(flatten)]
        dev: DeviceArgs,
    },
    /// Greedy decoding: prefill and per-token rates for exactly --new-tokens tokens, beside the
    /// per-token lower bounds measured on the same model (matrix-vector chain, weight bytes over
    /// memory bandwidth)
    Generate {
        /// A GPT checkpoint (else a preset with random weights)
        #[arg(long, conflicts_with = "preset")]
        ckpt: Option<PathBuf>,
        #[arg(long)]
        preset: Option<String>,
        /// The preset's vocabulary size (default: the preset's)
        #[arg(long, requires = "preset")]
        vocab_size: Option<i64>,
        #[arg(long, default_value_t = 1)]
        batch_size: i64,
        #[arg(long, default_value_t = 16)]
        prompt_tokens: i64,
        #[arg(long, default_value_t = 200)]
        new_tokens: usize,
        /// fp32, bf16 or auto
        #[arg(long, default_value = "fp32")]
        dtype: String,
        /// Timed runs after one warm-up (the median is reported)
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, default_value_t = 1337)]
        seed: u64,
        #[command(flatten)]
        dev: DeviceArgs,
    },
    /// Training tokens/s and MFU of a preset on random tokens
    Train {
        #[arg(long, default_value = "micro")]
        preset: String,
        #[arg(long, default_value_t = 16)]
        batch_size: i64,
        #[arg(long, default_value_t = 20)]
        steps: usize,
        #[arg(long, default_value = "auto")]
        dtype: String,
        /// Peak TFLOP/s for MFU (default: measured)
        #[arg(long)]
        peak_tflops: Option<f64>,
        #[arg(long, default_value_t = 1337)]
        seed: u64,
        #[command(flatten)]
        dev: DeviceArgs,
    },
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Peak { dev } => {
            let device = dev.resolve()?;
            let mut peaks = serde_json::Map::new();
            for kind in [tch::Kind::Float, tch::Kind::BFloat16] {
                peaks.insert(Dtype::name_of(kind).into(), gptlab::device::measure_peak_tflops(device, kind)?.into());
            }
            println!("{}", serde_json::json!({ "device": format!("{device:?}"), "peak_tflops": peaks }));
        }
        BenchCommand::ClipLoader { config, batches } => {
            let cfg = clip::ClipTrainConfig::from_file(&config)?;
            println!("{}", serde_json::to_string(&clip::bench_loader(&cfg, batches)?)?);
        }
        BenchCommand::ClipTrain { preset, batch_size, text_len, vocab_size, steps, dtype, seed, dev } => {
            let device = dev.resolve()?;
            let kind = Dtype::parse(&dtype)?.compute_kind(device);
            tch::manual_seed(seed as i64);
            // gptlab's tokenizers put end-of-text at id 0.
            let cfg = gptlab_vision::clip::ClipConfig::preset(&preset, vocab_size, 0)?;
            let mut b = bench::bench_clip_train(&cfg, device, kind, batch_size, text_len, steps, 3)?;
            b.preset = preset;
            println!("{}", serde_json::to_string(&b)?);
        }
        BenchCommand::Generate {
            ckpt,
            preset,
            vocab_size,
            batch_size,
            prompt_tokens,
            new_tokens,
            dtype,
            runs,
            seed,
            dev,
        } => {
            anyhow::ensure!(batch_size >= 1 && runs >= 1, "--batch-size and --runs must be at least 1");
            let device = dev.resolve()?;
            let kind = Dtype::parse(&dtype)?.compute_kind(device);
            tch::manual_seed(seed as i64);
            let (name, vs, mut model) = match (ckpt, preset) {
                (Some(dir), _) => {
                    let loaded = gptlab::checkpoint::load::<Gpt>(&dir, device)?;
                    (dir.display().to_string(), loaded.vs, loaded.model)
                }
                (None, preset) => {
                    let preset = preset.unwrap_or_else(|| "mini".into());
                    let mut cfg = GptConfig::preset(&preset)?;
                    if let Some(v) = vocab_size {
                        cfg.vocab_size = v;
                    }
                    let vs = tch::nn::VarStore::new(device);
                    let model = Gpt::new(&cfg, vs.root())?;
                    (preset, vs, model)
                }
            };
            model.cast_linears_for_inference(kind);
            let mut b = bench::bench_generate(&model, &vs, batch_size, prompt_tokens, new_tokens, runs)?;
            b.model = name;
            println!("{}", serde_json::to_string(&b)?);
        }
        BenchCommand::Train { preset, batch_size, steps, dtype, peak_tflops, seed, dev } => {
            let device = dev.resolve()?;
            let kind = Dtype::parse(&dtype)?.compute_kind(device);
            tch::manual_seed(seed as i64);
            let cfg = GptConfig::preset(&preset)?;
            let mut b = bench::bench_train(&cfg, device, kind, batch_size, steps, 3, peak_tflops)?;
            b.preset = preset;
            println!("{}", serde_json::to_string(&b)?);
        }
    }
    Ok(())
}
