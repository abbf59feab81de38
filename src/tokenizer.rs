//! Byte-level BPE (GPT-2's scheme) trained and run by HF `tokenizers`, so `tokenizer.json` loads
//! unchanged in Python. The full byte alphabet is in the initial vocabulary, so any UTF-8 text
//! encodes and decodes losslessly; the special tokens of [`crate::special`] get ids 0..n.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, ensure, Context, Result};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, TokenizerBuilder, TokenizerImpl};

use crate::special;

/// A temporary sibling of `path`, this process's own, to write and then rename into place.
fn unique_temp(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// A trained tokenizer plus the ids the rest of gptlab needs by name.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    eot: u32,
    pad: u32,
}

fn byte_level() -> ByteLevel {
    // No prefix space: the text round-trips exactly, as GPT-2's tokenizer does.
    ByteLevel::new(false, true, true)
}

impl Tokenizer {
    /// Trains on `texts` and writes `out` (tokenizer.json). `vocab_size` counts every token:
    /// the specials and the 256 byte symbols included.
    pub fn train<I, S>(texts: I, vocab_size: usize, out: &Path) -> Result<Self>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        let min_vocab = special::ALL.len() + 256;
        ensure!(
            vocab_size > min_vocab,
            "vocab size must exceed {min_vocab} (special tokens + 256 bytes), got {vocab_size}"
        );
        let specials = special::ALL.iter().map(|s| AddedToken::from(*s, true)).collect();
        let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(std::io::stderr().is_terminal())
            .special_tokens(specials)
            .initial_alphabet(alphabet)
            .build();
        let mut tok: TokenizerImpl<BPE, NormalizerWrapper, ByteLevel, ByteLevel, ByteLevel> = TokenizerBuilder::new()
            .with_model(BPE::default())
            .with_normalizer(None)
            .with_pre_tokenizer(Some(byte_level()))
            .with_post_processor(Some(byte_level()))
            .with_decoder(Some(byte_level()))
            .build()
            .map_err(|e| anyhow!("building tokenizer: {e}"))?;
        tok.train(&mut trainer, texts).map_err(|e| anyhow!("training tokenizer: {e}"))?;
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = unique_temp(out);
        tok.save(&tmp, false).map_err(|e| anyhow!("writing {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
        Self::from_file(out)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        ensure!(path.exists(), "tokenizer file {} does not exist", path.display());
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow!("tokenizer file {} is not a valid tokenizer.json: {e}", path.display()))?;
        let id = |t: &str| {
            inner.token_to_id(t).ok_or_else(|| anyhow!("tokenizer {} lacks the special token {t}", path.display()))
        };
        let (eot, pad) = (id(special::EOT)?, id(special::PAD)?);
        Ok(Self { inner, eot, pad })
    }

    /// Writes `tokenizer.json` to `path` through a temporary file and a rename, so a reader (another
    /// rank of a launch, writing the same file) never sees it half-written.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = unique_temp(path);
        self.inner.save(&tmp, false).map_err(|e| anyhow!("writing {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| anyhow!("tokenizing: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes every id, special tokens included, so encode→decode is the identity.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| anyhow!("decoding: {e}"))
    }

    /// Number of ids, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn eot(&self) -> u32 {
        self.eot
    }

    pub fn pad(&self) -> u32 {
        self.pad
    }

    /// Adds special tokens (never split, ids after the current ones), as fine-tuning adds
    /// GPT-1's start, delimiter and extract tokens.
    pub fn add_special_tokens(&mut self, tokens: &[String]) {
        let added: Vec<AddedToken> = tokens.iter().map(|t| AddedToken::from(t.as_str(), true)).collect();
        self.inner.add_special_tokens(&added);
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}
