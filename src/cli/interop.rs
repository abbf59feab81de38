//! `gptlab import` and `gptlab export`: Hugging Face checkpoints in and out.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use gptlab::hf;

/// Where an import reads and writes.
#[derive(Args)]
pub struct ImportArgs {
    #[arg(long)]
    from: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Replace an earlier import at --out
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand)]
pub enum ImportCommand {
    /// A Hugging Face GPT-2 directory (config.json + model.safetensors) to a gptlab checkpoint
    HfGpt2(ImportArgs),
    /// A Hugging Face CLIPModel directory (config.json + model.safetensors) to a gptlab checkpoint
    HfClip(ImportArgs),
}

#[derive(Subcommand)]
pub enum ExportCommand {
    /// A gptlab checkpoint to a Hugging Face GPT-2 directory
    HfGpt2 {
        #[arg(long)]
        ckpt: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Replace an earlier output of the same kind at --out
        #[arg(long)]
        force: bool,
    },
}

pub fn import(cmd: ImportCommand) -> Result<()> {
    match cmd {
        ImportCommand::HfGpt2(ImportArgs { from, out, force }) => {
            let cfg = hf::import_gpt2(&from, &out, force)?;
            println!("imported GPT-2 ({} params) into {}", cfg.param_counts().total, out.display());
        }
        ImportCommand::HfClip(ImportArgs { from, out, force }) => {
            let cfg = hf::import_clip(&from, &out, force)?;
            println!(
                "imported CLIP (ViT {}px/{} px patches, width {}) into {}",
                cfg.vision.image_size,
                cfg.vision.patch_size,
                cfg.vision.width,
                out.display()
            );
        }
    }
    Ok(())
}

pub fn export(cmd: ExportCommand) -> Result<()> {
    let ExportCommand::HfGpt2 { ckpt, out, force } = cmd;
    hf::export_gpt2(&ckpt, &out, force)?;
    println!("exported {} to {}", ckpt.display(), out.display());
    Ok(())
}
