//! InstructGPT's pipeline: demonstrations and K-wise rankings from a programmatic labeler
//! ([`labeler`], [`data`]), then supervised fine-tuning ([`sft`]) and the reward model on K-wise
//! rankings ([`reward`]), and DPO on the same preferences ([`dpo`]). PPO with the pretraining mix
//! ([`ppo`]) builds on all three; [`label`] has the labeler rank a model's own samples, as
//! InstructGPT's comparison data was collected, [`compare`] judges any models' answers, and
//! [`report`] gathers the figures.

pub mod compare;
pub mod data;
pub mod dpo;
pub mod label;
pub mod labeler;
pub mod ppo;
pub mod report;
pub mod reward;
pub mod sft;

use std::path::Path;

use anyhow::Result;

use crate::checkpoint;
use crate::models::gpt::{Gpt, GptConfig};
use crate::train::trainer::Setup;

/// The decoder a stage trains, built in `setup`'s variables in its compute precision: the
/// `init` checkpoint's weights on a fresh run (a resumed one gets the checkpoint's from the
/// Trainer).
fn decoder(cfg: &GptConfig, setup: &Setup, init: &Path) -> Result<Gpt> {
    let mut model = Gpt::new(cfg, setup.vs.root())?;
    model.set_compute_kind(setup.kind);
    if setup.resumed.is_none() {
        let file = init.join(checkpoint::MODEL_FILE);
        checkpoint::fill(&setup.vs, checkpoint::read_tensors(&file)?, &file)?;
    }
    Ok(model)
}
