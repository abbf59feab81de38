//! The embedded synthetic corpus: gptlab's default data, generated rather than downloaded.
//!
//! Four kinds of short documents exercise what the GPT papers measure at a scale a small model
//! can learn: scene descriptions (grounding for the vision work), GPT-3's arithmetic, in-context
//! episodes whose rule must be inferred from earlier lines, and verifiable instructions for SFT
//! and RLHF. A fixed slice of words and operand pairs is held out of every corpus for
//! evaluation. Generation is deterministic in the seed: each document has its own random
//! stream, so the corpus is the same however many threads build it.

pub mod arithmetic;
pub mod crawl;
pub mod icl;
pub mod instruct;
pub mod labelled;
pub mod lexicon;
pub mod scene;
pub mod vlm;

use crate::data::shards;
use crate::data::split::in_val_split;
use crate::jsonl::write_jsonl;
use crate::tokenizer::Tokenizer;
use anyhow::{ensure, Context, Result};
use instruct::InstructTask;
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Largest hold-out fraction: training draws reject held-out items, so a larger fraction would
/// make them slow and could leave too few training words and pairs.
pub const MAX_HOLDOUT: f64 = 0.9;

/// Settings of the synthetic corpus; `write_corpus` records them next to the corpus as
/// `synth.toml`, from which the same corpus can be regenerated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    /// Documents drawn before the split; exact duplicates are dropped, so the corpus may hold
    /// slightly fewer.
    pub docs: usize,
    pub seed: u64,
    /// About this fraction of documents goes to the validation split.
    pub val_fraction: f64,
    pub mix: Mixture,
    pub holdout: Holdout,
    /// The arithmetic documents' families and worked share.
    pub arithmetic: arithmetic::ArithmeticMix,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            docs: 20_000,
            seed: 0,
            val_fraction: 0.05,
            mix: Mixture::default(),
            holdout: Holdout::default(),
            arithmetic: arithmetic::ArithmeticMix::default(),
        }
    }
}

impl SynthConfig {
    /// Rejects settings that cannot give a usable corpus, before any work is done.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.docs > 0, "synth.docs must be positive");
        ensure!(
            (0.0..1.0).contains(&self.val_fraction),
            "synth.val_fraction must be in [0, 1), got {}",
            self.val_fraction
        );
        self.mix.validate()?;
        self.arithmetic.resolve()?;
        self.holdout.validate()
    }
}

/// Relative weights of the document kinds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mixture {
    pub scene: f64,
    pub arithmetic: f64,
    pub icl: f64,
    pub instruct: f64,
}

impl Default for Mixture {
    fn default() -> Self {
        Mixture { scene: 1.0, arithmetic: 1.0, icl: 1.0, instruct: 1.0 }
    }
}

impl Mixture {
    /// The weights in `DocKind::ALL` order.
    fn weights(&self) -> [f64; 4] {
        [self.scene, self.arithmetic, self.icl, self.instruct]
    }

    /// Weights must be finite and non-negative with a positive sum.
    pub fn validate(&self) -> Result<()> {
        for (kind, w) in DocKind::ALL.iter().zip(self.weights()) {
            ensure!(w.is_finite() && w >= 0.0, "synth.mix.{} must be a non-negative number, got {w}", kind.name());
        }
        ensure!(self.weights().iter().sum::<f64>() > 0.0, "synth.mix weights must not all be zero");
        Ok(())
    }
}

/// Fractions of the lexicon's words and of arithmetic operand pairs kept out of every training
/// document, for evaluation on items the model never saw.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Holdout {
    pub words: f64,
    pub numbers: f64,
}

impl Default for Holdout {
    fn default() -> Self {
        Holdout { words: 0.1, numbers: 0.1 }
    }
}

impl Holdout {
    /// Both fractions must be in [0, MAX_HOLDOUT].
    pub fn validate(&self) -> Result<()> {
        for (name, frac) in [("words", self.words), ("numbers", self.numbers)] {
            ensure!(
                (0.0..=MAX_HOLDOUT).contains(&frac),
                "synth.holdout.{name} must be in [0, {MAX_HOLDOUT}], got {frac}"
            );
        }
        Ok(())
    }
}

/// What generated a document; serialised lowercase ("scene", "arithmetic", "icl", "instruct").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocKind {
    Scene,
    Arithmetic,
    Icl,
    Instruct,
}

impl DocKind {
    pub const ALL: [DocKind; 4] = [DocKind::Scene, DocKind::Arithmetic, DocKind::Icl, DocKind::Instruct];

    /// The serialised name.
    pub fn name(self) -> &'static str {
        match self {
            DocKind::Scene => "scene",
            DocKind::Arithmetic => "arithmetic",
            DocKind::Icl => "icl",
            DocKind::Instruct => "instruct",
        }
    }
}

/// One line of a corpus file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    pub kind: DocKind,
    pub text: String,
}

/// A generated corpus; no text occurs twice, in particular not in both splits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Corpus {
    pub train: Vec<Document>,
    pub val: Vec<Document>,
}

/// Generates the corpus `cfg` describes. Same config, same corpus, byte for byte.
pub fn generate(cfg: &SynthConfig) -> Result<Corpus> {
    cfg.validate()?;
    let kinds = WeightedIndex::new(cfg.mix.weights()).context("invalid synth.mix")?;
    let words = lexicon::train_words(cfg.holdout.words);
    let arith = (cfg.arithmetic.resolve()?, cfg.arithmetic.worked_share);
    let docs: Vec<Document> = (0..cfg.docs)
        .into_par_iter()
        .map(|index| {
            let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
            rng.set_stream(index as u64);
            let kind = DocKind::ALL[kinds.sample(&mut rng)];
            let text = random_text(kind, &mut rng, &words, &cfg.holdout, (&arith.0, arith.1));
            Document { kind, text }
        })
        .collect();
    Ok(split(docs, cfg.val_fraction))
}

/// One document of `kind`, drawing words only from `words`, operands only outside the hold-out,
/// and arithmetic from `arith` (its families and worked share).
fn random_text<R: Rng + ?Sized>(
    kind: DocKind,
    rng: &mut R,
    words: &[&str],
    holdout: &Holdout,
    arith: (&[arithmetic::ArithFamily], f64),
) -> String {
    match kind {
        DocKind::Scene => {
            let scene = scene::Scene::random(rng, scene::MAX_DESCRIBED_OBJECTS);
            scene::describe(&scene, rng)
        }
        DocKind::Arithmetic => arithmetic::random_document(rng, holdout, arith.0, arith.1),
        DocKind::Icl => icl::random_episode(rng, words),
        DocKind::Instruct => InstructTask::random(rng, holdout).document(),
    }
}

/// Drops repeated texts (keeping the first) and splits the rest by text hash.
fn split(docs: Vec<Document>, val_fraction: f64) -> Corpus {
    let mut seen = HashSet::new();
    let mut corpus = Corpus::default();
    for doc in docs {
        if !seen.insert(doc.text.clone()) {
            continue;
        }
        if in_val_split(&doc.text, val_fraction) {
            corpus.val.push(doc);
        } else {
            corpus.train.push(doc);
        }
    }
    corpus
}

/// Writes `dir/train.jsonl`, `dir/val.jsonl` and `dir/synth.toml`, the resolved config that
/// regenerates the same files.
pub fn write_corpus(dir: &Path, corpus: &Corpus, cfg: &SynthConfig) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_jsonl(&dir.join("train.jsonl"), &corpus.train)?;
    write_jsonl(&dir.join("val.jsonl"), &corpus.val)?;
    let resolved = toml::to_string(cfg).context("cannot serialise the synth config")?;
    let path = dir.join("synth.toml");
    fs::write(&path, resolved).with_context(|| format!("cannot write {}", path.display()))
}

/// A uniformly random element of a constant table or of a list known to be non-empty.
pub(crate) fn any<T: Copy, R: Rng + ?Sized>(items: &[T], rng: &mut R) -> T {
    items[rng.random_range(0..items.len())]
}

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
    let corpus = generate(synth_cfg)?;
    let corpus_dir = dir.join("corpus");
    write_corpus(&corpus_dir, &corpus, synth_cfg)?;

    step(&format!("training a {vocab_size}-token byte-level BPE tokenizer"));
    let tok_path = dir.join("tokenizer.json");
    Tokenizer::train(corpus.train.iter().map(|d| d.text.as_str()), vocab_size, &tok_path)?;

    step("tokenizing into shards");
    let shard_dir = dir.join("shards");
    let meta = shards::tokenize_corpus(&corpus_dir, &tok_path, &shard_dir, shards::DEFAULT_SHARD_TOKENS, true)?;
    step(&format!("{} train / {} val tokens", meta.train.tokens, meta.val.tokens));
    Ok((shard_dir, meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::lexicon::{held_out_words, is_held_out_pair, train_words, WORDS};
    use tempfile::tempdir;

    fn small(seed: u64) -> SynthConfig {
        SynthConfig { docs: 600, seed, val_fraction: 0.2, ..SynthConfig::default() }
    }

    fn words_of(text: &str) -> impl Iterator<Item = &str> {
        text.split(|c: char| !c.is_ascii_alphabetic()).filter(|w| !w.is_empty())
    }

    /// The operand pairs an arithmetic or instruct document states (not the digit steps of a
    /// worked solution), as hold-out keys.
    fn operand_pairs(text: &str) -> Vec<(i64, i64)> {
        let head = |s: &str| -> Vec<i64> {
            s.split(|c: char| !c.is_ascii_digit()).filter(|t| !t.is_empty()).map(|t| t.parse().unwrap()).collect()
        };
        let key = |n: Vec<i64>| match n[..] {
            [a, b] => (a, b),
            [a, b, c] => (a, 10 * b + c),
            _ => panic!("unexpected operands {n:?} in {text}"),
        };
        if text.starts_with("Add ") || text.starts_with("Multiply ") {
            let first = text.lines().next().unwrap();
            return vec![key(head(first))];
        }
        let mut pairs = Vec::new();
        for line in text.lines() {
            let expr = if let Some(rest) = line.strip_prefix("Q: What is ") {
                rest.split('?').next()
            } else if let Some(rest) = line.strip_prefix("What is ") {
                rest.split('?').next()
            } else if let Some(rest) = line.strip_prefix("Compute ") {
                rest.strip_suffix('.')
            } else {
                line.split(" = ").next().filter(|_| line.contains(" = "))
            };
            pairs.extend(expr.map(|e| key(head(e))));
        }
        pairs
    }

    #[test]
    fn same_seed_same_bytes_different_seed_different_corpus() {
        let cfg = small(7);
        let a = generate(&cfg).unwrap();
        assert_eq!(a, generate(&cfg).unwrap());
        assert_ne!(a, generate(&small(8)).unwrap());
        let (x, y) = (tempdir().unwrap(), tempdir().unwrap());
        write_corpus(x.path(), &a, &cfg).unwrap();
        write_corpus(y.path(), &generate(&cfg).unwrap(), &cfg).unwrap();
        for file in ["train.jsonl", "val.jsonl", "synth.toml"] {
            let bytes = fs::read(x.path().join(file)).unwrap();
            assert!(!bytes.is_empty());
            assert_eq!(bytes, fs::read(y.path().join(file)).unwrap(), "{file}");
        }
        let resolved = fs::read_to_string(x.path().join("synth.toml")).unwrap();
        assert_eq!(toml::from_str::<SynthConfig>(&resolved).unwrap(), cfg);
        let line = fs::read_to_string(x.path().join("train.jsonl")).unwrap();
        let first: Document = serde_json::from_str(line.lines().next().unwrap()).unwrap();
        assert_eq!(first, a.train[0]);
        assert!(line.starts_with(&format!("{{\"kind\":\"{}\"", first.kind.name())));
    }

    #[test]
    fn splits_are_disjoint_sized_and_mixed() {
        let corpus = generate(&small(1)).unwrap();
        let train: HashSet<&str> = corpus.train.iter().map(|d| d.text.as_str()).collect();
        let val: HashSet<&str> = corpus.val.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(train.len(), corpus.train.len(), "duplicates in train");
        assert_eq!(val.len(), corpus.val.len(), "duplicates in val");
        assert!(train.is_disjoint(&val));
        let total = (corpus.train.len() + corpus.val.len()) as f64;
        assert!(total > 550.0);
        let share = corpus.val.len() as f64 / total;
        assert!((0.13..0.27).contains(&share), "val share {share}");
        for kind in DocKind::ALL {
            assert!(corpus.train.iter().filter(|d| d.kind == kind).count() > 80);
        }
        let short = corpus.train.iter().filter(|d| d.text.len() < 400).count();
        assert!(short as f64 > 0.95 * corpus.train.len() as f64);
    }

    #[test]
    fn mixture_weights_choose_the_kinds() {
        let cfg = SynthConfig {
            docs: 200,
            mix: Mixture { scene: 0.0, arithmetic: 1.0, icl: 0.0, instruct: 0.0 },
            ..SynthConfig::default()
        };
        let corpus = generate(&cfg).unwrap();
        assert!(corpus.train.iter().all(|d| d.kind == DocKind::Arithmetic));
        // Additions only, every one worked: the chain-of-thought probe's corpus, at its extreme.
        let worked = SynthConfig {
            arithmetic: arithmetic::ArithmeticMix { families: vec!["2da".into(), "5da".into()], worked_share: 1.0 },
            ..cfg.clone()
        };
        let corpus = generate(&worked).unwrap();
        assert!(corpus.train.iter().all(|d| d.text.starts_with("Add ") && d.text.contains("digit by digit")));
        let bad = SynthConfig {
            arithmetic: arithmetic::ArithmeticMix { families: vec!["2dx".into()], ..Default::default() },
            ..cfg
        };
        assert!(format!("{:#}", generate(&bad).unwrap_err()).contains("unknown arithmetic family \"2dx\""));
    }

    #[test]
    fn held_out_words_and_pairs_never_reach_training_documents() {
        let cfg = SynthConfig { docs: 1500, holdout: Holdout { words: 0.4, numbers: 0.4 }, ..small(3) };
        let held: HashSet<&str> = held_out_words(cfg.holdout.words).into_iter().collect();
        let corpus = generate(&cfg).unwrap();
        let docs = corpus.train.iter().chain(&corpus.val);
        let mut pairs_seen = 0;
        for doc in docs {
            for word in words_of(&doc.text) {
                assert!(!held.contains(word), "held-out {word:?} in {doc:?}");
            }
            let arithmetic =
                doc.kind == DocKind::Arithmetic || doc.kind == DocKind::Instruct && doc.text.contains("\nWhat is ");
            if arithmetic {
                for (a, b) in operand_pairs(&doc.text) {
                    pairs_seen += 1;
                    assert!(!is_held_out_pair(a, b, 0.4), "({a}, {b}) in {doc:?}");
                }
            }
        }
        assert!(pairs_seen > 500, "only {pairs_seen} pairs checked");
    }

    /// Template words are not lexicon words, so holding a word out cannot be undone by a
    /// template that happens to contain it.
    #[test]
    fn templates_use_no_lexicon_words() {
        let corpus = generate(&small(2)).unwrap();
        let lexicon: HashSet<&str> = WORDS.iter().copied().collect();
        for doc in &corpus.train {
            let used: HashSet<&str> = words_of(&doc.text).filter(|w| lexicon.contains(w)).collect();
            let allowed = match doc.kind {
                DocKind::Scene | DocKind::Arithmetic => 0,
                DocKind::Instruct => 1,
                DocKind::Icl => continue,
            };
            assert!(used.len() <= allowed, "{used:?} in {doc:?}");
        }
    }

    #[test]
    fn invalid_configs_are_rejected_with_the_field_named() {
        let bad = [
            (SynthConfig { docs: 0, ..SynthConfig::default() }, "synth.docs"),
            (SynthConfig { val_fraction: 1.0, ..SynthConfig::default() }, "synth.val_fraction"),
            (
                SynthConfig { mix: Mixture { icl: -1.0, ..Mixture::default() }, ..SynthConfig::default() },
                "synth.mix.icl",
            ),
            (
                SynthConfig {
                    mix: Mixture { scene: 0.0, arithmetic: 0.0, icl: 0.0, instruct: 0.0 },
                    ..SynthConfig::default()
                },
                "all be zero",
            ),
            (
                SynthConfig { holdout: Holdout { words: f64::NAN, numbers: 0.1 }, ..SynthConfig::default() },
                "synth.holdout.words",
            ),
        ];
        for (cfg, expected) in bad {
            let err = generate(&cfg).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
        assert!(toml::from_str::<SynthConfig>("docs = 5\ncolour = 1").is_err());
        let partial: SynthConfig = toml::from_str("docs = 5\n[mix]\nicl = 2.0").unwrap();
        assert_eq!((partial.docs, partial.mix.icl, partial.mix.scene), (5, 2.0, 1.0));
        assert!(train_words(MAX_HOLDOUT).len() >= 12);
    }
}
