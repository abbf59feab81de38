//! InstructGPT's pipeline: demonstrations and K-wise rankings from a programmatic labeler
//! ([`labeler`], [`data`]), then supervised fine-tuning ([`sft`]) and the reward model on K-wise
//! rankings ([`reward`]), and DPO on the same preferences ([`dpo`]). PPO with the pretraining mix
//! builds on these.

pub mod data;
pub mod dpo;
pub mod labeler;
pub mod reward;
pub mod sft;
