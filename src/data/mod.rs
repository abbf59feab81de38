//! From corpus to batches: token shards on disk and the resumable window sampler.

pub mod sampler;
pub mod shards;
pub mod split;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::synth::{self, SynthConfig};
use crate::tokenizer::Tokenizer;

/// The embedded default data set under `dir`: a synthetic corpus, a byte-level BPE trained on
/// it, and its token shards. Returns the shard directory and its metadata.
pub fn prepare_synthetic(
    dir: &Path,
    synth_cfg: &SynthConfig,
    vocab_size: usize,
) -> Result<(PathBuf, shards::ShardMeta)> {
    let step = |msg: &str| eprintln!("[data] {msg}");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    step(&format!("synthesising {} documents", synth_cfg.docs));
    let corpus = synth::generate(synth_cfg)?;
    let corpus_dir = dir.join("corpus");
    synth::write_corpus(&corpus_dir, &corpus, synth_cfg)?;

    step(&format!("training a {vocab_size}-token byte-level BPE tokenizer"));
    let tok_path = dir.join("tokenizer.json");
    Tokenizer::train(corpus.train.iter().map(|d| d.text.as_str()), vocab_size, &tok_path)?;

    step("tokenizing into shards");
    let shard_dir = dir.join("shards");
    let meta = shards::tokenize_corpus(&corpus_dir, &tok_path, &shard_dir, shards::DEFAULT_SHARD_TOKENS)?;
    step(&format!("{} train / {} val tokens", meta.train.tokens, meta.val.tokens));
    Ok((shard_dir, meta))
}
