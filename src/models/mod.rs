//! Model families. One file per model, one transformer block per family.

pub mod finetuned;
pub mod gpt;
pub mod reward;
pub mod vlm;
