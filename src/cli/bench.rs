//! `gptlab bench`: the matmul peak MFU is measured against, training throughput, and the CLIP
//! loader against training.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use gptlab::models::gpt::GptConfig;
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
