//! GPT-3's data cleaning: near-duplicate removal with MinHash LSH ([`minhash`], [`dedup`]).

pub mod dedup;
pub mod minhash;
