//! gptlab: the GPT series rebuilt at a scale one CPU can train and one GPU can scale.
//!
//! The pipeline: [`synth`] (or [`data::corpus`] import) → [`tokenizer`] → [`data`] shards →
//! [`train`] a [`models::gpt::Gpt`] → [`checkpoint`] → [`infer`] (generation, scoring), with
//! [`hf`] for Hugging Face weights in and out. [`clip`] trains and evaluates the CLIP towers of
//! `gptlab-vision`; [`scaling`] fits scaling laws over sweeps of runs. Layers every model family
//! shares come from `gptlab-nn`, re-exported as [`nn`].

pub mod bench;
pub mod chat;
pub mod checkpoint;
pub mod clean;
pub mod clip;
pub mod config;
pub mod data;
pub mod device;
pub mod dist;
pub mod eval;
pub mod finetune;
pub mod hf;
pub mod infer;
pub mod jsonl;
pub mod metrics;
pub mod models;
pub mod plot;
pub mod quickstart;
pub mod report;
pub mod rlhf;
pub mod scaling;
pub mod special;
pub mod synth;
pub mod tokenizer;
pub mod train;
pub mod vlm;

pub use gptlab_nn as nn;
