//! gptlab: the GPT series rebuilt at a scale one CPU can train and one GPU can scale.
//!
//! The pipeline: [`synth`] (or [`corpus`] import) → [`tokenizer`] → [`data`] shards →
//! [`train`] a [`model::gpt::Gpt`] → [`checkpoint`] → [`generate`] / [`score`], with [`hf`] for
//! Hugging Face GPT-2 weights in and out.

pub mod bench;
pub mod checkpoint;
pub mod clip;
pub mod clip_data;
pub mod clip_eval;
pub mod config;
pub mod corpus;
pub mod data;
pub mod device;
pub mod generate;
pub mod hf;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod quickstart;
pub mod report;
pub mod scaling;
pub mod score;
pub mod special;
pub mod synth;
pub mod tokenizer;
pub mod train;
