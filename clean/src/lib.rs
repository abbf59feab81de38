//! GPT-3's near-duplicate removal over JSONL records: MinHash LSH ([`minhash`]) clustered in
//! input order ([`dedup`]), with the executor side of the Spark job ([`spark`]). No libtorch, so
//! the `gptlab-clean` binary starts in milliseconds and ships to Spark executors alone; `gptlab
//! clean` re-exports all of it beside the stages that need models.

pub mod cli;
pub mod dedup;
pub mod minhash;
pub mod records;
pub mod spark;
