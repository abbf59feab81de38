//! GPT-3's data cleaning: near-duplicate removal with MinHash LSH ([`minhash`], [`dedup`]) and
//! the quality classifier with its Pareto keep rule ([`quality`]), and the removal of 13-gram
//! overlaps with evaluation documents ([`decontaminate`]), over JSONL records ([`records`]);
//! [`pipeline`] runs them in GPT-3's order. The parts that need no libtorch live in the
//! `gptlab-clean` crate, whose small binary Spark executors run.

pub mod decontaminate;
pub mod pipeline;
pub mod quality;

pub use gptlab_clean::{cli, dedup, minhash, records, spark};
