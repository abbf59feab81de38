//! `gptlab quickstart`: the main job in one command.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use gptlab::quickstart::{self, QuickstartOptions};

use super::DeviceArgs;

#[derive(Args)]
pub struct QuickstartArgs {
    #[arg(long, default_value = "runs/quickstart")]
    out: PathBuf,
    /// Training time budget in minutes
    #[arg(long, default_value_t = 2.0)]
    minutes: f64,
    /// Train for exactly this many steps instead of the time budget
    #[arg(long)]
    steps: Option<u64>,
    /// Documents to synthesise
    #[arg(long, default_value_t = 40_000)]
    docs: usize,
    #[arg(long, default_value = "micro")]
    preset: String,
    /// Steps of the small CLIP trained after the GPT (0 skips it)
    #[arg(long, default_value_t = 250)]
    clip_steps: u64,
    /// Instruct steps of the multimodal GPT built from both (0 skips it; needs the CLIP)
    #[arg(long, default_value_t = 300)]
    vlm_steps: u64,
    /// Documents per task of the few-shot evaluation of the GPT (0 skips it)
    #[arg(long, default_value_t = 50)]
    eval_docs: usize,
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    #[command(flatten)]
    dev: DeviceArgs,
}

pub fn run(a: QuickstartArgs) -> Result<()> {
    quickstart::run(&QuickstartOptions {
        out: a.out,
        minutes: a.minutes,
        steps: a.steps,
        docs: a.docs,
        preset: a.preset,
        seed: a.seed,
        device: a.dev.device,
        threads: a.dev.threads,
        clip_steps: a.clip_steps,
        vlm_steps: a.vlm_steps,
        eval_docs: a.eval_docs,
        ..Default::default()
    })
}
