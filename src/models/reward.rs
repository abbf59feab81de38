//! InstructGPT's reward model: the SFT decoder with a scalar head (`score`, HF's
//! `GPT2ForSequenceClassification` name) on the final hidden state of the response's closing
//! end-of-text, minus a stored offset (`reward_offset`) fitted so that demonstrations score 0 on
//! average. The decoder keeps its LM head, so the checkpoint still loads as a GPT.
//!
//! Shapes: R rows (prompt-response sequences), T time, C = n_embd.

use anyhow::Result;
use gptlab_nn::Linear;
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use super::gpt::{Gpt, GptConfig, Input, Pass};

/// A reward checkpoint's `config.json` (family `gpt-reward`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardConfig {
    pub gpt: GptConfig,
}

impl RewardConfig {
    pub fn validate(&self) -> Result<()> {
        self.gpt.validate()
    }
}

/// The decoder, its scalar head and the reward offset.
#[derive(Debug)]
pub struct RewardModel {
    pub cfg: RewardConfig,
    pub gpt: Gpt,
    score: Linear,
    /// Subtracted from every score: the demonstrations' mean after training.
    pub offset: Tensor,
}

impl RewardModel {
    /// The decoder's variables under `p` (a GPT checkpoint's names), `score.weight` [1, C] and
    /// `reward_offset` [1] (zero until fitted).
    pub fn new(cfg: &RewardConfig, p: nn::Path) -> Result<Self> {
        cfg.validate()?;
        let gpt = Gpt::new(&cfg.gpt, p.clone())?;
        let score = Linear::new(&p / "score", cfg.gpt.n_embd, 1, 0.02, false);
        let offset = p.var("reward_offset", &[1], nn::Init::Const(0.0));
        Ok(Self { cfg: cfg.clone(), gpt, score, offset })
    }

    /// Rewards [R] of right-padded rows `ids` [R, T], each read at its position `last` [R] (the
    /// closing end-of-text); causal attention keeps the padding after it out.
    pub fn rewards(&self, ids: &Tensor, last: &Tensor, train: bool) -> Result<Tensor> {
        let rows = Tensor::arange(ids.size()[0], (Kind::Int64, ids.device()));
        self.rewards_at(ids, &rows, last, train)
    }

    /// Scores [N] read at positions (`rows`[n], `pos`[n]) of `ids` [R, T]: a value model's
    /// value of every state of a response.
    pub fn rewards_at(&self, ids: &Tensor, rows: &Tensor, pos: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.gpt.hidden(Input::Tokens(ids), Pass { train, ..Default::default() })?; // [R, T, C]
        let at = h.index(&[Some(rows.shallow_clone()), Some(pos.shallow_clone())]); // [N, C]
        Ok(self.score.forward(&at, Kind::Float).squeeze_dim(-1) - &self.offset) // [N]
    }
}

/// InstructGPT's K-wise ranking loss: for each prompt, the mean over its C(K, 2) (better, worse)
/// pairs of -log sigmoid(r_better - r_worse), then the mean over prompts. `pairs` holds each
/// prompt's pairs as row indices into `rewards` [R].
pub fn kwise_loss(rewards: &Tensor, pairs: &[Vec<(i64, i64)>]) -> Tensor {
    let (mut win, mut lose, mut weight) = (Vec::new(), Vec::new(), Vec::new());
    for p in pairs {
        for &(w, l) in p {
            win.push(w);
            lose.push(l);
            weight.push(1.0 / (p.len() * pairs.len()) as f32);
        }
    }
    let dev = rewards.device();
    let w = rewards.index_select(0, &Tensor::from_slice(&win).to_device(dev));
    let l = rewards.index_select(0, &Tensor::from_slice(&lose).to_device(dev));
    -((w - l).log_sigmoid() * Tensor::from_slice(&weight).to_device(dev)).sum(Kind::Float)
}

/// A PPO run's checkpoint (family `gpt-ppo`): the policy (a whole GPT, at the root, so the
/// checkpoint samples as one) and the value model beside it under `value.` (a reward model's
/// shape, initialised from the reward model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyValueConfig {
    pub gpt: GptConfig,
    pub value: RewardConfig,
}

impl PolicyValueConfig {
    pub fn validate(&self) -> Result<()> {
        self.gpt.validate()?;
        self.value.validate()
    }
}
