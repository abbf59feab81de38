//! InstructGPT's pipeline: demonstrations and K-wise rankings from a programmatic labeler
//! ([`labeler`], [`data`]), then supervised fine-tuning ([`sft`]) and the reward model on K-wise
//! rankings ([`reward`]). PPO with the pretraining mix, and DPO, build on these.

pub mod data;
pub mod labeler;
pub mod reward;
pub mod sft;
