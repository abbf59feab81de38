//! `gptlab import` and `gptlab export`: Hugging Face checkpoints in and out.

use std::path::{Path, PathBuf};

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
    /// A Hugging Face LlavaForConditionalGeneration directory (GPT-2 text, CLIP vision) to a gptlab VLM checkpoint
    HfLlava(ImportArgs),
}

/// Where an export reads and writes.
#[derive(Args)]
pub struct ExportArgs {
    #[arg(long)]
    ckpt: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Replace an earlier output of the same kind at --out
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand)]
pub enum ExportCommand {
    /// A gptlab checkpoint to a Hugging Face GPT-2 directory
    HfGpt2(ExportArgs),
    /// A gptlab VLM checkpoint (mlp2x_gelu projector) to a Hugging Face LLaVA directory
    HfLlava(ExportArgs),
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
        ImportCommand::HfLlava(ImportArgs { from, out, force }) => {
            let cfg = hf::import_llava(&from, &out, force)?;
            println!(
                "imported LLaVA (GPT-2 of width {}, CLIP ViT of width {}, {} tokens per image) into {}",
                cfg.text.n_embd,
                cfg.vision.width,
                cfg.tokens_per_image(),
                out.display()
            );
        }
    }
    Ok(())
}

/// An export: checkpoint, output directory, whether to replace an earlier export.
type Exporter = fn(&Path, &Path, bool) -> Result<()>;

pub fn export(cmd: ExportCommand) -> Result<()> {
    let (ExportArgs { ckpt, out, force }, export): (_, Exporter) = match cmd {
        ExportCommand::HfGpt2(args) => (args, hf::export_gpt2),
        ExportCommand::HfLlava(args) => (args, hf::export_llava),
    };
    export(&ckpt, &out, force)?;
    println!("exported {} to {}", ckpt.display(), out.display());
    Ok(())
}
