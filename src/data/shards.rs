//! Token shards: a corpus tokenized once into flat files of little-endian u16 (u32 when the vocab
//! needs it), documents separated by `<|endoftext|>`, read back memory-mapped so training never
//! holds the corpus in RAM. `meta.json` beside the shards says how to read them.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use indicatif::{ParallelProgressIterator, ProgressBar, ProgressStyle};
use memmap2::Mmap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::tokenizer::Tokenizer;

/// Tokens per shard file unless told otherwise (100 MB of u16).
pub const DEFAULT_SHARD_TOKENS: usize = 50_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenDtype {
    U16,
    U32,
}

impl TokenDtype {
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size <= 1 << 16 {
            TokenDtype::U16
        } else {
            TokenDtype::U32
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            TokenDtype::U16 => 2,
            TokenDtype::U32 => 4,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SplitMeta {
    pub shards: Vec<String>,
    pub tokens: u64,
    pub documents: u64,
}

/// `meta.json` of a shard directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardMeta {
    pub dtype: TokenDtype,
    pub vocab_size: usize,
    pub eot: u32,
    pub train: SplitMeta,
    pub val: SplitMeta,
    /// Entropy (nats/token) of the train split's unigram distribution: the loss of a model that
    /// ignores context, the baseline a trained GPT must beat.
    pub train_unigram_entropy: f64,
    /// [`tokenizer_hash`] of the tokenizer the shards were made with, so a resume can refuse a
    /// checkpoint trained on another tokenizer's ids (absent in shards made before it existed).
    #[serde(default)]
    pub tokenizer_hash: Option<String>,
}

/// A fixed fingerprint of a `tokenizer.json` file's bytes.
pub fn tokenizer_hash(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("{:016x}", crate::data::split::fnv1a64(&bytes)))
}

impl ShardMeta {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("meta.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("reading {} (is {} a `gptlab data tokenize` output?)", path.display(), dir.display())
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn split(&self, split: &str) -> Result<&SplitMeta> {
        match split {
            "train" => Ok(&self.train),
            "val" => Ok(&self.val),
            other => bail!("unknown split {other:?}: expected train or val"),
        }
    }
}

/// Tokenizes `docs` in parallel and writes `{split}_NNN.bin` shards under `dir`.
fn write_split(
    dir: &Path,
    split: &str,
    docs: &[String],
    tok: &Tokenizer,
    dtype: TokenDtype,
    shard_tokens: usize,
) -> Result<(SplitMeta, Vec<u64>)> {
    let bar = ProgressBar::new(docs.len() as u64).with_message(format!("tokenizing {split}"));
    bar.set_style(ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} docs [{elapsed_precise}<{eta_precise}]")?);
    let encoded: Vec<Vec<u32>> = docs
        .par_iter()
        .progress_with(bar.clone())
        .map(|d| {
            let mut ids = tok.encode(d)?;
            ids.push(tok.eot());
            Ok(ids)
        })
        .collect::<Result<_>>()?;
    bar.finish_and_clear();
    let mut counts = vec![0u64; tok.vocab_size()];
    let mut shards = Vec::new();
    let mut writer: Option<BufWriter<File>> = None;
    let mut in_shard = 0usize;
    let mut total = 0u64;
    for id in encoded.iter().flatten().copied() {
        if writer.is_none() || in_shard == shard_tokens {
            if let Some(mut w) = writer.take() {
                w.flush()?;
            }
            let name = format!("{split}_{:03}.bin", shards.len());
            let path = dir.join(&name);
            writer = Some(BufWriter::new(File::create(&path).with_context(|| format!("creating {}", path.display()))?));
            shards.push(name);
            in_shard = 0;
        }
        let w = writer.as_mut().expect("opened above");
        match dtype {
            TokenDtype::U16 => w.write_all(&(id as u16).to_le_bytes())?,
            TokenDtype::U32 => w.write_all(&id.to_le_bytes())?,
        }
        counts[id as usize] += 1;
        in_shard += 1;
        total += 1;
    }
    if let Some(mut w) = writer {
        w.flush()?;
    }
    Ok((SplitMeta { shards, tokens: total, documents: docs.len() as u64 }, counts))
}

/// Entropy in nats of the distribution given by `counts`.
pub fn unigram_entropy(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.ln()
        })
        .sum()
}

/// Tokenizes the corpus in `corpus_dir` (train.jsonl, val.jsonl) into shards under `out`, with a
/// copy of the tokenizer so the directory is self-contained. Shards already in `out` are
/// replaced only with `force` (runs may be training on them).
pub fn tokenize_corpus(
    corpus_dir: &Path,
    tokenizer: &Path,
    out: &Path,
    shard_tokens: usize,
    force: bool,
) -> Result<ShardMeta> {
    ensure!(shard_tokens > 0, "shard size must be positive");
    let tok = Tokenizer::from_file(tokenizer)?;
    let train = crate::data::corpus::read_split(corpus_dir, "train")?;
    let val = crate::data::corpus::read_split(corpus_dir, "val")?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let old: Vec<PathBuf> = std::fs::read_dir(out)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?
        .into_iter()
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name == "meta.json" || (name.ends_with(".bin") && (name.starts_with("train_") || name.starts_with("val_")))
        })
        .collect();
    ensure!(
        old.is_empty() || force,
        "{} already holds shards: pass --force to replace them (runs trained on them could no longer resume)",
        out.display()
    );
    for path in old {
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    let dtype = TokenDtype::for_vocab(tok.vocab_size());
    let (train_meta, counts) = write_split(out, "train", &train, &tok, dtype, shard_tokens)?;
    let (val_meta, _) = write_split(out, "val", &val, &tok, dtype, shard_tokens)?;
    tok.save(&out.join("tokenizer.json"))?;
    let meta = ShardMeta {
        tokenizer_hash: Some(tokenizer_hash(&out.join("tokenizer.json"))?),
        dtype,
        vocab_size: tok.vocab_size(),
        eot: tok.eot(),
        train: train_meta,
        val: val_meta,
        train_unigram_entropy: unigram_entropy(&counts),
    };
    std::fs::write(out.join("meta.json"), serde_json::to_string_pretty(&meta)?)?;
    Ok(meta)
}

/// One split's shards, memory-mapped.
pub struct TokenShards {
    dtype: TokenDtype,
    maps: Vec<Mmap>,
}

impl TokenShards {
    pub fn open(dir: &Path, split: &str) -> Result<Self> {
        let meta = ShardMeta::read(dir)?;
        let split_meta = meta.split(split)?;
        let mut maps = Vec::new();
        for name in &split_meta.shards {
            let path: PathBuf = dir.join(name);
            let file = File::open(&path).with_context(|| format!("opening shard {}", path.display()))?;
            // SAFETY: shards are written once by `tokenize_corpus` and never modified in place.
            let map = unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
            ensure!(map.len() % meta.dtype.bytes() == 0, "shard {} is truncated", path.display());
            maps.push(map);
        }
        let shards = Self { dtype: meta.dtype, maps };
        let held: usize = shards.shard_lens().iter().sum();
        ensure!(
            held as u64 == split_meta.tokens,
            "the {split} shards in {} hold {held} tokens, meta.json says {} ({:?}): truncated shards, or a wrong dtype",
            dir.display(),
            split_meta.tokens,
            meta.dtype
        );
        // One pass over the ids now rather than an index error deep inside a training step.
        for i in 0..shards.maps.len() {
            if let Some(bad) = shards.ids(i).find(|&id| id as usize >= meta.vocab_size) {
                bail!(
                    "shard {} holds token id {bad}, outside the tokenizer's {} ids (meta.json)",
                    dir.join(&split_meta.shards[i]).display(),
                    meta.vocab_size
                );
            }
        }
        Ok(shards)
    }

    /// Tokens in each shard.
    pub fn shard_lens(&self) -> Vec<usize> {
        self.maps.iter().map(|m| m.len() / self.dtype.bytes()).collect()
    }

    /// `len` tokens of shard `shard` starting at `start`, as i64 ids.
    pub fn window(&self, shard: usize, start: usize, len: usize) -> Vec<i64> {
        let b = self.dtype.bytes();
        decode(self.dtype, &self.maps[shard][start * b..(start + len) * b]).map(i64::from).collect()
    }

    /// Every id of shard `shard`, read from the map without copying it.
    fn ids(&self, shard: usize) -> impl Iterator<Item = u32> + '_ {
        decode(self.dtype, &self.maps[shard])
    }
}

/// The little-endian ids in `bytes`.
fn decode(dtype: TokenDtype, bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes.chunks_exact(dtype.bytes()).map(move |c| match dtype {
        TokenDtype::U16 => u32::from(u16::from_le_bytes([c[0], c[1]])),
        TokenDtype::U32 => u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
    })
}
