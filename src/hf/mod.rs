//! Hugging Face interop, one file per model family (GPT-2, CLIP, LLaVA): `save_pretrained` directories in and out.
//! gptlab stores HF's own tensor names and layouts, so the work is the config mapping, HF's
//! buffers and prefixes, and tied heads.

pub mod clip;
pub mod gpt2;
pub mod llava;

pub use clip::import_clip;
pub use gpt2::{export_gpt2, import_gpt2};
pub use llava::{export_llava, import_llava};

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

use crate::checkpoint;

/// An absolute form of `path` that need not exist yet: its deepest existing ancestor
/// canonicalised, the rest appended.
fn absolute(path: &Path) -> Result<PathBuf> {
    let mut missing = Vec::new();
    let mut existing = path.to_path_buf();
    while !existing.exists() {
        let name = existing.file_name().map(|n| n.to_os_string()).context("a path with no existing ancestor")?;
        missing.push(name);
        existing = match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
    }
    let mut abs = std::fs::canonicalize(&existing).with_context(|| format!("resolving {}", existing.display()))?;
    abs.extend(missing.into_iter().rev());
    Ok(abs)
}

/// Guards where an import or export writes. It never writes over its own input (`out` equal to
/// it, or a folder that holds it); an existing non-empty `out` is replaced only when
/// `earlier(out)` says it is an earlier output of the same kind and `force` is given. Anything
/// else (a trained checkpoint, an unrelated folder) is refused, so an import or export cannot
/// destroy data.
pub fn check_output(input: &Path, out: &Path, force: bool, kind: &str, earlier: impl Fn(&Path) -> bool) -> Result<()> {
    let (input_abs, out_abs) = (absolute(input)?, absolute(out)?);
    ensure!(
        !input_abs.starts_with(&out_abs),
        "refusing to write into {}: it is or holds the input {}",
        out.display(),
        input.display()
    );
    let non_empty = out.is_dir() && std::fs::read_dir(out)?.next().is_some();
    if out.exists() && (non_empty || !out.is_dir()) {
        ensure!(
            earlier(out),
            "refusing to write into {}: it exists and is not {kind}; choose an empty or new directory",
            out.display()
        );
        ensure!(force, "{} holds {kind} already: pass --force to replace it", out.display());
    }
    Ok(())
}

/// Whether `dir` is a gptlab checkpoint of family `C` written by an import (weights and config,
/// no training state): the only checkpoint an import may replace, so that a trained run's
/// optimizer and state are never lost to one.
pub fn is_imported<C: checkpoint::ModelConfig>(dir: &Path) -> bool {
    checkpoint::is_checkpoint(dir)
        && checkpoint::read_config::<C>(dir).is_ok()
        && !dir.join(checkpoint::STATE_FILE).exists()
        && !dir.join(checkpoint::OPTIMIZER_FILE).exists()
}
