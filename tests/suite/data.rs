//! Token shards on disk and the resumable batch sampler.

use crate::common;

use gptlab::data::sampler::{SamplerState, WindowSampler};
use gptlab::data::shards::{self, ShardMeta, TokenDtype, TokenShards};
use gptlab::tokenizer::Tokenizer;
use std::sync::Arc;

#[test]
fn shards_are_little_endian_u16_with_eot_after_each_document() {
    let root = tempfile::tempdir().unwrap();
    let corpus = root.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let docs = ["alpha beta", "gamma", "alpha gamma beta"];
    let lines: String = docs.iter().map(|d| format!("{{\"text\": {d:?}}}\n")).collect();
    std::fs::write(corpus.join("train.jsonl"), &lines).unwrap();
    std::fs::write(corpus.join("val.jsonl"), "{\"text\": \"beta\"}\n").unwrap();
    let tok_path = root.path().join("tok.json");
    let tok = Tokenizer::train(docs.iter().cycle().take(50), 280, &tok_path).unwrap();
    let out = root.path().join("shards");
    // Two tokens per shard file forces several shards.
    let meta = shards::tokenize_corpus(&corpus, &tok_path, &out, 2, false).unwrap();
    assert_eq!(meta.dtype, TokenDtype::U16);
    assert_eq!(meta.eot, tok.eot());
    let mut expected: Vec<u32> = Vec::new();
    for d in docs {
        expected.extend(tok.encode(d).unwrap());
        expected.push(tok.eot());
    }
    assert_eq!(meta.train.tokens as usize, expected.len());
    assert_eq!(meta.train.documents, 3);
    let mut bytes = Vec::new();
    for name in &meta.train.shards {
        bytes.extend(std::fs::read(out.join(name)).unwrap());
    }
    let on_disk: Vec<u32> = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32).collect();
    assert_eq!(on_disk, expected);
    assert_eq!(meta.train.shards.len(), expected.len().div_ceil(2));
    let reread = ShardMeta::read(&out).unwrap();
    assert_eq!(reread.train.tokens, meta.train.tokens);
    assert!(out.join("tokenizer.json").exists(), "shards carry their tokenizer");
    // Memory-mapped reads see the same ids, shard by shard.
    let mapped = TokenShards::open(&out, "train").unwrap();
    let first: Vec<i64> = mapped.window(0, 0, 2);
    assert_eq!(first, vec![expected[0] as i64, expected[1] as i64]);
}

#[test]
fn wide_vocabularies_use_u32() {
    assert_eq!(TokenDtype::for_vocab(65_536), TokenDtype::U16);
    assert_eq!(TokenDtype::for_vocab(65_537), TokenDtype::U32);
}

#[test]
fn unigram_entropy_of_a_uniform_distribution_is_ln_n() {
    assert!((shards::unigram_entropy(&[5, 5, 5, 5]) - 4f64.ln()).abs() < 1e-12);
    assert_eq!(shards::unigram_entropy(&[7, 0]), 0.0);
}

#[test]
fn batches_depend_only_on_seed_and_index() {
    let dir = common::shard_dir();
    let sampler = Arc::new(WindowSampler::new(TokenShards::open(dir, "train").unwrap(), 3, 16).unwrap());
    let a = sampler.batch(5, 10);
    assert_eq!(a.len(), 3 * 17);
    assert_eq!(a, sampler.batch(5, 10));
    assert_ne!(a, sampler.batch(5, 11));
    assert_ne!(a, sampler.batch(6, 10));
    // The loader thread resumed at batch 10 yields exactly batches 10, 11, ...
    let rx = sampler.spawn(SamplerState { seed: 5, next_batch: 10 }, 2);
    assert_eq!(rx.recv().unwrap(), a);
    assert_eq!(rx.recv().unwrap(), sampler.batch(5, 11));
}

#[test]
fn a_split_shorter_than_one_window_is_an_error() {
    let dir = common::shard_dir();
    let err = WindowSampler::new(TokenShards::open(dir, "val").unwrap(), 1, 10_000_000).err().unwrap().to_string();
    assert!(err.contains("fewer than block_size + 1"), "{err}");
}
