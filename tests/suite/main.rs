//! Every integration test in one binary, so libtorch is linked once rather than once per file.

mod common;

mod clean;
mod cli;
mod clip;
mod data;
mod dist;
mod eval;
mod finetune;
mod hf;
mod hostile;
mod model;
mod optim;
mod rlhf;
mod scaling;
mod tokenizer;
mod train;
mod vlm;
