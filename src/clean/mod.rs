//! GPT-3's data cleaning: near-duplicate removal with MinHash LSH ([`minhash`], [`dedup`]) and
//! the quality classifier with its Pareto keep rule ([`quality`]), and the removal of 13-gram
//! overlaps with evaluation documents ([`decontaminate`]), over JSONL records ([`records`]);
//! [`pipeline`] runs them in GPT-3's order.

pub mod decontaminate;
pub mod dedup;
pub mod minhash;
pub mod pipeline;
pub mod quality;
pub mod records;
