//! GPT-3's data cleaning: near-duplicate removal with MinHash LSH ([`minhash`], [`dedup`]) and
//! the quality classifier with its Pareto keep rule ([`quality`]), over JSONL records
//! ([`records`]).

pub mod dedup;
pub mod minhash;
pub mod quality;
pub mod records;
