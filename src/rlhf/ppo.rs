//! `gptlab rlhf ppo --config FILE.toml [--resume]`: InstructGPT's third stage. The policy starts
//! from the SFT checkpoint, the frozen SFT model is the reference, the value model starts from the
//! reward model, and the reward model scores each response:
//!
//! - **Rollouts.** Each iteration samples `rollouts` prompts' responses at one temperature, the
//!   temperature every log-probability of the iteration is taken at. The old log-probabilities
//!   come from a full forward pass, so the first minibatch's ratio is 1.
//! - **Rewards.** Per token, −β·(log π − log π_ref); on the last token, the reward model's score,
//!   minus `no_eos_penalty` when the response never ended. β is fixed, or adapts to `target_kl`
//!   (Ziegler et al.'s controller), and is stored in the checkpoint.
//! - **Advantages.** GAE (γ = 1, λ = 0.95), whitened over the batch's tokens.
//! - **Updates.** `ppo_epochs` × `minibatches` optimizer steps per iteration, each through the
//!   Trainer: the clipped policy loss, plus `vf_coef` × the clipped value loss, plus `ptx_coef` ×
//!   the LM loss on a batch of pretraining windows (PPO-ptx). Dropout is off throughout.
//! - **Metrics per iteration:** reward, KL, β, ratio, clip fraction, end-of-text rate, response
//!   length, ptx loss; validation gives the held-out LM loss on the pretraining shards (the
//!   regression ptx is there to reduce) and the greedy reward on held-out prompts.
//!
//! Checkpoints fall on iteration boundaries, so a resumed run samples the same rollouts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use super::data::read;
use crate::chat::{self, Role, Turn};
use crate::checkpoint;
use crate::data::sampler::{epoch_batch, WindowSampler};
use crate::data::shards::{tokenizer_hash, ShardMeta, TokenShards};
use crate::dist::{self, ProcessGroup};
use crate::infer::generate::{generate_batch, SampleOptions};
use crate::models::gpt::{Gpt, GptConfig, Input, Pass};
use crate::models::reward::{PolicyValueConfig, RewardConfig, RewardModel};
use crate::tokenizer::Tokenizer;
use crate::train::optim::{AdamWConfig, ParamGroup};
use crate::train::trainer::{step_seed, Evaluate, MicroLoss, RunParts, Setup, Trainer, ValMetrics};
use crate::train::{pretraining_lr, TrainSection, TrainSummary};

/// Prompts and the pretraining data.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PpoData {
    /// `{"prompt"}` records sampled for rollouts.
    pub prompts: PathBuf,
    /// Held-out prompts for the validation reward.
    pub val_prompts: PathBuf,
    /// Token shards of the pretraining corpus: the ptx batches and the held-out LM loss.
    pub pretrain: PathBuf,
}

/// PPO's settings (InstructGPT's and TRL's defaults where they apply).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoSection {
    pub iterations: u64,
    /// Prompts sampled per iteration.
    pub rollouts: usize,
    pub temperature: f64,
    pub max_new_tokens: usize,
    /// β of the per-token KL penalty (its start, when adaptive).
    pub kl_coef: f64,
    /// Adapt β towards this KL per response (None: fixed β).
    pub target_kl: Option<f64>,
    /// The adaptive controller's horizon, in responses.
    pub kl_horizon: f64,
    /// γ of PPO-ptx: the pretraining LM loss's weight (0: plain PPO).
    pub ptx_coef: f64,
    pub ptx_batch: usize,
    pub gamma: f64,
    pub lam: f64,
    pub clip: f64,
    pub value_clip: f64,
    pub vf_coef: f64,
    pub ppo_epochs: usize,
    pub minibatches: usize,
    /// Subtracted from the score of a response that never ends.
    pub no_eos_penalty: f64,
    /// Held-out prompts answered greedily at each validation.
    pub val_prompts: usize,
}

impl Default for PpoSection {
    fn default() -> Self {
        Self {
            iterations: 20,
            rollouts: 16,
            temperature: 1.0,
            max_new_tokens: 24,
            kl_coef: 0.02,
            target_kl: None,
            kl_horizon: 10_000.0,
            ptx_coef: 0.0,
            ptx_batch: 4,
            gamma: 1.0,
            lam: 0.95,
            clip: 0.2,
            value_clip: 0.2,
            vf_coef: 0.1,
            ppo_epochs: 4,
            minibatches: 4,
            no_eos_penalty: 1.0,
            val_prompts: 32,
        }
    }
}

impl PpoSection {
    fn steps_per_iteration(&self) -> u64 {
        (self.ppo_epochs * self.minibatches) as u64
    }

    fn validate(&self) -> Result<()> {
        ensure!(self.iterations > 0 && self.rollouts > 0, "ppo.iterations and ppo.rollouts must be positive");
        ensure!(self.ppo_epochs > 0 && self.minibatches > 0, "ppo.ppo_epochs and ppo.minibatches must be positive");
        ensure!(
            self.minibatches <= self.rollouts,
            "ppo.minibatches ({}) cannot exceed ppo.rollouts ({})",
            self.minibatches,
            self.rollouts
        );
        ensure!(
            self.temperature > 0.0 && self.temperature.is_finite(),
            "ppo.temperature must be positive (rollouts sample)"
        );
        ensure!(self.max_new_tokens > 0, "ppo.max_new_tokens must be positive");
        for (k, v) in [
            ("kl_coef", self.kl_coef),
            ("ptx_coef", self.ptx_coef),
            ("vf_coef", self.vf_coef),
            ("clip", self.clip),
            ("value_clip", self.value_clip),
        ] {
            ensure!(v.is_finite() && v >= 0.0, "ppo.{k} must be >= 0, got {v}");
        }
        ensure!(
            (0.0..=1.0).contains(&self.gamma) && (0.0..=1.0).contains(&self.lam),
            "ppo.gamma and ppo.lam must be in [0, 1]"
        );
        Ok(())
    }
}

/// A PPO run as the user writes it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PpoFile {
    pub out_dir: PathBuf,
    /// The SFT checkpoint: the policy's start and the reference.
    pub policy: PathBuf,
    /// The reward model checkpoint: the scores and the value model's start.
    pub reward: PathBuf,
    pub data: PpoData,
    #[serde(default)]
    pub ppo: PpoSection,
    #[serde(default)]
    pub train: toml::Table,
    #[serde(default)]
    pub optim: AdamWConfig,
}

/// The resolved run, written next to the outputs.
#[derive(Clone, Debug, Serialize)]
pub struct PpoConfig {
    pub out_dir: PathBuf,
    pub policy: PathBuf,
    pub reward: PathBuf,
    pub data: PpoData,
    pub ppo: PpoSection,
    pub train: TrainSection,
    pub optim: AdamWConfig,
}

impl PpoFile {
    pub fn from_file(path: &Path) -> Result<Self> {
        let file: Self = crate::config::read_toml(path)?;
        file.ppo.validate().with_context(|| format!("config {}", path.display()))?;
        Ok(file)
    }

    /// `[train]`: one optimizer step per minibatch, validation, logging and checkpoints once per
    /// iteration, a constant learning rate after a short warmup unless given.
    fn section(&self, pretrain_lr: Option<f64>) -> Result<TrainSection> {
        let spi = self.ppo.steps_per_iteration() as i64;
        let mut t = self.train.clone();
        let lr = pretrain_lr.map_or(1e-5, |lr| lr * 0.05);
        let derived: [(&str, toml::Value); 9] = [
            ("lr", lr.into()),
            ("min_lr", lr.into()),
            ("max_steps", (self.ppo.iterations as i64 * spi).into()),
            ("warmup_steps", spi.into()),
            ("eval_interval", spi.into()),
            ("ckpt_interval", spi.into()),
            ("log_interval", spi.into()),
            ("batch_size", (self.ppo.rollouts.div_ceil(self.ppo.minibatches) as i64).into()),
            ("eval_batches", 4.into()),
        ];
        for (key, value) in derived {
            t.entry(key.to_string()).or_insert(value);
        }
        let s: TrainSection = toml::Value::Table(t)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("[train]: {}", e.message()))?;
        s.validate()?;
        ensure!(s.grad_accum == 1, "PPO takes one minibatch per optimizer step: train.grad_accum must be 1");
        ensure!(
            s.max_steps.is_multiple_of(spi as u64) && s.ckpt_interval.is_multiple_of(spi as u64),
            "train.max_steps and train.ckpt_interval must be whole iterations ({spi} steps = ppo_epochs x minibatches)"
        );
        Ok(s)
    }
}

/// GAE over one response: advantages and returns from per-token rewards and values (the value
/// after the last token is 0).
pub fn gae(rewards: &[f64], values: &[f64], gamma: f64, lam: f64) -> (Vec<f64>, Vec<f64>) {
    let n = rewards.len();
    let mut adv = vec![0.0; n];
    let mut next = 0.0;
    for t in (0..n).rev() {
        let v_next = if t + 1 < n { values[t + 1] } else { 0.0 };
        let delta = rewards[t] + gamma * v_next - values[t];
        next = delta + gamma * lam * next;
        adv[t] = next;
    }
    let returns = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, returns)
}

/// Per-token rewards: −β (log π − log π_ref) on every token, and `score` added on the last.
pub fn token_rewards(logp: &[f64], ref_logp: &[f64], score: f64, beta: f64) -> Vec<f64> {
    let mut r: Vec<f64> = logp.iter().zip(ref_logp).map(|(a, b)| -beta * (a - b)).collect();
    if let Some(last) = r.last_mut() {
        *last += score;
    }
    r
}

/// One sampled response with everything its updates need.
struct Rollout {
    /// Prompt and response ids.
    ids: Vec<i64>,
    /// Where the response starts in `ids`.
    start: usize,
    old_logp: Vec<f64>,
    old_values: Vec<f64>,
    adv: Vec<f64>,
    returns: Vec<f64>,
}

/// Right-padded ids of `rows` and, for every response token in order, its (row, position of
/// the logits that predict it, token).
fn token_batch(rows: &[&Rollout], pad: i64, device: Device) -> (Tensor, Tensor, Tensor, Tensor) {
    let width = rows.iter().map(|r| r.ids.len()).max().unwrap_or(1);
    let ids: Vec<i64> =
        rows.iter().flat_map(|r| r.ids.iter().copied().chain(std::iter::repeat_n(pad, width - r.ids.len()))).collect();
    let (mut row, mut pos, mut tok) = (Vec::new(), Vec::new(), Vec::new());
    for (i, r) in rows.iter().enumerate() {
        for p in r.start..r.ids.len() {
            row.push(i as i64);
            pos.push(p as i64 - 1);
            tok.push(r.ids[p]);
        }
    }
    let t = |v: &[i64]| Tensor::from_slice(v).to_device(device);
    (Tensor::from_slice(&ids).view([rows.len() as i64, width as i64]).to_device(device), t(&row), t(&pos), t(&tok))
}

/// Log-probabilities [N] of every response token of `rows` at `temperature` (dropout off).
fn token_logps(model: &Gpt, rows: &[&Rollout], temperature: f64, pad: i64, device: Device) -> Result<Tensor> {
    let (ids, row, pos, tok) = token_batch(rows, pad, device);
    let logits = model.forward(Input::Tokens(&ids), Pass::default())?; // [R, T, V]
    let at = logits.index(&[Some(row), Some(pos)]); // [N, V]
    Ok((at / temperature).log_softmax(-1, Kind::Float).gather(1, &tok.unsqueeze(1), false).squeeze_dim(1))
}

/// Values [N] of the states before every response token of `rows`.
fn token_values(value: &RewardModel, rows: &[&Rollout], pad: i64, device: Device) -> Result<Tensor> {
    let (ids, row, pos, _) = token_batch(rows, pad, device);
    value.rewards_at(&ids, &row, &pos, false)
}

fn to_vec(t: &Tensor) -> Result<Vec<f64>> {
    Ok(Vec::<f64>::try_from(t.to_kind(Kind::Double).to_device(Device::Cpu))?)
}

/// Splits a flat per-token vector back into rows of the given lengths.
fn split(flat: &[f64], lens: &[usize]) -> Vec<Vec<f64>> {
    let mut out = Vec::with_capacity(lens.len());
    let mut at = 0;
    for &n in lens {
        out.push(flat[at..at + n].to_vec());
        at += n;
    }
    out
}

/// What one iteration measured.
#[derive(Clone, Debug, Default)]
struct IterationStats {
    reward: f64,
    kl: f64,
    eot_rate: f64,
    response_len: f64,
    ratio: f64,
    /// The largest |ratio − 1| of the iteration's first minibatch (0 up to rounding); rank 0's
    /// under data parallelism.
    first_ratio_dev: f64,
    clip_frac: f64,
    ptx_loss: f64,
    minibatches: usize,
}

struct Ppo {
    policy: Gpt,
    value: RewardModel,
    reference: Gpt,
    reward: RewardModel,
    /// β, a variable of the checkpoint so that an adapted value survives a resume.
    kl_coef: Tensor,
    tok: Tokenizer,
    cfg: PpoSection,
    prompts: Vec<String>,
    val_prompts: Vec<String>,
    pretrain: WindowSampler,
    pretrain_val: WindowSampler,
    seed: u64,
    buffer: Vec<Rollout>,
    stats: IterationStats,
    device: Device,
    /// Under data parallelism each rank samples and updates on every `world_size`-th rollout;
    /// the statistics that whiten advantages and adapt β are summed over the ranks.
    dist: Option<Arc<ProcessGroup>>,
}

impl Ppo {
    fn pad(&self) -> i64 {
        self.tok.pad() as i64
    }

    /// Prompt ids in the chat template, ending in an open assistant turn.
    fn prompt_ids(&self, prompt: &str) -> Result<Vec<i64>> {
        let text = chat::generation_prompt(&[Turn::new(Role::User, prompt)]);
        let ids: Vec<i64> = self.tok.encode(&text)?.into_iter().map(i64::from).collect();
        let block = self.policy.cfg.block_size as usize;
        ensure!(
            ids.len() + self.cfg.max_new_tokens <= block,
            "a prompt of {} tokens and {} new ones exceed the context of {block}",
            ids.len(),
            self.cfg.max_new_tokens
        );
        Ok(ids)
    }

    /// Samples (or, at temperature 0, decodes greedily) responses to `prompts`; returns the rows
    /// (prompt + response) and where each response starts.
    fn respond(&self, prompts: &[&str], temperature: f64, seed: u64) -> Result<Vec<(Vec<i64>, usize)>> {
        let ids = prompts.iter().map(|p| self.prompt_ids(p)).collect::<Result<Vec<_>>>()?;
        let opts =
            SampleOptions { temperature, max_new_tokens: self.cfg.max_new_tokens, seed, ..SampleOptions::default() };
        let vocab = self.tok.vocab_size() as i64;
        let new = generate_batch(&self.policy, &ids, vocab, Some(self.tok.eot() as i64), &opts, |_, _| true)?;
        Ok(ids
            .into_iter()
            .zip(new)
            .map(|(mut p, n)| {
                (p.len(), {
                    p.extend(n);
                    p
                })
            })
            .map(|(s, ids)| (ids, s))
            .collect())
    }

    /// Reward-model scores of whole rows, read at each row's last token.
    fn scores(&self, rows: &[Vec<i64>]) -> Result<Vec<f64>> {
        let width = rows.iter().map(Vec::len).max().unwrap_or(1);
        let ids: Vec<i64> = rows
            .iter()
            .flat_map(|r| r.iter().copied().chain(std::iter::repeat_n(self.pad(), width - r.len())))
            .collect();
        let last: Vec<i64> = rows.iter().map(|r| r.len() as i64 - 1).collect();
        let ids = Tensor::from_slice(&ids).view([rows.len() as i64, width as i64]).to_device(self.device);
        to_vec(&self.reward.rewards(&ids, &Tensor::from_slice(&last).to_device(self.device), false)?)
    }

    /// Samples iteration `it`'s rollouts (this rank's share of them) and computes their rewards,
    /// advantages and returns.
    fn rollout(&mut self, it: u64) -> Result<()> {
        let idx = epoch_batch(self.prompts.len(), self.seed, it, self.cfg.rollouts);
        let (rank, world) = dist::rank_world(self.dist.as_deref());
        let prompts: Vec<&str> = idx.iter().skip(rank).step_by(world).map(|&i| self.prompts[i].as_str()).collect();
        let mut seed = step_seed(self.seed as i64, it);
        if rank > 0 {
            seed = step_seed(seed, rank as u64);
        }
        let sampled = self.respond(&prompts, self.cfg.temperature, seed as u64)?;
        let eot = self.tok.eot() as i64;
        let ended: Vec<bool> = sampled.iter().map(|(ids, _)| ids.last() == Some(&eot)).collect();
        let mut rows: Vec<Rollout> = sampled
            .into_iter()
            .map(|(ids, start)| Rollout {
                ids,
                start,
                old_logp: vec![],
                old_values: vec![],
                adv: vec![],
                returns: vec![],
            })
            .collect();
        let lens: Vec<usize> = rows.iter().map(|r| r.ids.len() - r.start).collect();
        let (old, refs, values) = tch::no_grad(|| -> Result<_> {
            let refs: Vec<&Rollout> = rows.iter().collect();
            let t = self.cfg.temperature;
            Ok((
                to_vec(&token_logps(&self.policy, &refs, t, self.pad(), self.device)?)?,
                to_vec(&token_logps(&self.reference, &refs, t, self.pad(), self.device)?)?,
                to_vec(&token_values(&self.value, &refs, self.pad(), self.device)?)?,
            ))
        })?;
        let scores = tch::no_grad(|| self.scores(&rows.iter().map(|r| r.ids.clone()).collect::<Vec<_>>()))?;
        let beta = self.kl_coef.double_value(&[0]);
        let (old, refs, values) = (split(&old, &lens), split(&refs, &lens), split(&values, &lens));
        let mut all_adv = Vec::new();
        let mut kl_sum = 0.0;
        for (i, r) in rows.iter_mut().enumerate() {
            let score = scores[i] - if ended[i] { 0.0 } else { self.cfg.no_eos_penalty };
            let rewards = token_rewards(&old[i], &refs[i], score, beta);
            let (adv, returns) = gae(&rewards, &values[i], self.cfg.gamma, self.cfg.lam);
            kl_sum += old[i].iter().zip(&refs[i]).map(|(a, b)| a - b).sum::<f64>();
            all_adv.extend_from_slice(&adv);
            (r.old_logp, r.old_values, r.adv, r.returns) = (old[i].clone(), values[i].clone(), adv, returns);
        }
        // Whiten the advantages over every token of the batch (of every rank).
        let sums = dist::sum_ranks(self.dist.as_deref(), vec![all_adv.len() as f64, all_adv.iter().sum()])?;
        let n = sums[0].max(1.0);
        let mean = sums[1] / n;
        let square_sum =
            dist::sum_ranks(self.dist.as_deref(), vec![all_adv.iter().map(|a| (a - mean).powi(2)).sum()])?[0];
        let std = (square_sum / n).sqrt().max(1e-8);
        for r in rows.iter_mut() {
            r.adv.iter_mut().for_each(|a| *a = (*a - mean) / std);
        }
        let local = vec![
            kl_sum,
            scores.iter().sum(),
            ended.iter().filter(|&&e| e).count() as f64,
            lens.iter().sum::<usize>() as f64,
        ];
        let total = dist::sum_ranks(self.dist.as_deref(), local)?;
        let (kl_sum, score_sum, ended_count, len_sum) = (total[0], total[1], total[2], total[3]);
        let b = self.cfg.rollouts as f64;
        let kl = kl_sum / b;
        if let Some(target) = self.cfg.target_kl {
            let err = (kl / target - 1.0).clamp(-0.2, 0.2);
            let new_beta = beta * (1.0 + err * b / self.cfg.kl_horizon);
            let _ = tch::no_grad(|| self.kl_coef.fill_(new_beta));
        }
        self.stats = IterationStats {
            reward: score_sum / b,
            kl,
            eot_rate: ended_count / b,
            response_len: len_sum / b,
            ..IterationStats::default()
        };
        self.buffer = rows;
        Ok(())
    }

    /// The loss of update `k` of iteration `it`: minibatch `k % minibatches` of PPO epoch
    /// `k / minibatches`, each epoch a seeded permutation of the rollouts.
    fn update_loss(&mut self, it: u64, k: u64, global_step: u64) -> Result<MicroLoss> {
        let mb = self.cfg.minibatches as u64;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(it * 1024 + k / mb + 1);
        let mut order: Vec<usize> = (0..self.buffer.len()).collect();
        order.shuffle(&mut rng);
        // Minibatch i takes positions [i n / m, (i + 1) n / m) of this rank's n rollouts: never
        // empty, as m <= n.
        let (n, i) = (self.buffer.len(), (k % mb) as usize);
        let chunk = order[i * n / mb as usize..(i + 1) * n / mb as usize].to_vec();
        let rows: Vec<&Rollout> = chunk.iter().map(|&i| &self.buffer[i]).collect();
        let flat = |f: fn(&Rollout) -> &Vec<f64>| {
            let v: Vec<f32> = rows.iter().flat_map(|r| f(r).iter().map(|&x| x as f32)).collect();
            Tensor::from_slice(&v).to_device(self.device)
        };
        let (old, adv, ret, old_v) =
            (flat(|r| &r.old_logp), flat(|r| &r.adv), flat(|r| &r.returns), flat(|r| &r.old_values));
        let new = token_logps(&self.policy, &rows, self.cfg.temperature, self.pad(), self.device)?;
        let ratio = (&new - &old).exp();
        let c = self.cfg.clip;
        let pg = (-&adv * &ratio).maximum(&(-&adv * ratio.clamp(1.0 - c, 1.0 + c))).mean(Kind::Float);
        let (ids, row, pos, _) = token_batch(&rows, self.pad(), self.device);
        let v = self.value.rewards_at(&ids, &row, &pos, false)?;
        let vc = self.cfg.value_clip;
        let v_clipped = &old_v + (&v - &old_v).clamp(-vc, vc);
        let vf = ((&v - &ret).square().maximum(&(v_clipped - &ret).square()) * 0.5).mean(Kind::Float);
        let tokens = row.size()[0];
        let flops = self.policy.cfg.flops_per_token(ids.size()[1]) * 2.0 * tokens as f64;
        let mut loss = MicroLoss::mean_of(pg + vf * self.cfg.vf_coef, tokens as f64, flops);
        if self.cfg.ptx_coef > 0.0 {
            let t = self.pretrain.block_size as i64;
            let w = Tensor::from_slice(&self.pretrain.batch(self.seed, global_step))
                .view([-1, t + 1])
                .to_device(self.device);
            let w = dist::rank_rows(&w, dist::rank_world(self.dist.as_deref())); // [ptx_batch / W, T + 1]
            let ptx = self.policy.loss(&w.narrow(1, 0, t), &w.narrow(1, 1, t), false)?;
            self.stats.ptx_loss += ptx.double_value(&[]);
            loss.flops += self.policy.cfg.flops_per_token(t) * (w.size()[0] * t) as f64;
            loss = loss.plus(ptx * self.cfg.ptx_coef, None);
        }
        let r = ratio.detach();
        let dev = (&r - 1.0).abs();
        if k == 0 {
            self.stats.first_ratio_dev = dev.max().double_value(&[]);
        }
        self.stats.ratio += r.mean(Kind::Float).double_value(&[]);
        self.stats.clip_frac += dev.gt(c).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        self.stats.minibatches += 1;
        Ok(loss)
    }

    /// After an iteration's last update: the ranks' ratio, clip fraction and ptx loss averaged,
    /// so the metrics describe every rank's minibatches.
    fn average_update_stats(&mut self) -> Result<()> {
        let world = dist::rank_world(self.dist.as_deref()).1 as f64;
        let s = &self.stats;
        let sums = dist::sum_ranks(self.dist.as_deref(), vec![s.ratio, s.clip_frac, s.ptx_loss])?;
        (self.stats.ratio, self.stats.clip_frac, self.stats.ptx_loss) =
            (sums[0] / world, sums[1] / world, sums[2] / world);
        Ok(())
    }
}

impl Evaluate for Ppo {
    /// The held-out LM loss and the greedy reward on held-out prompts, both shared among the
    /// ranks.
    fn validate(&mut self) -> Result<ValMetrics> {
        let t = self.pretrain_val.block_size as i64;
        let batches = 4;
        let group = self.dist.clone();
        let lm = dist::sum_over_shards(group.as_deref(), batches, 1, |i| {
            let w = Tensor::from_slice(&self.pretrain_val.batch(0, i as u64)).view([-1, t + 1]).to_device(self.device);
            Ok(
                vec![
                    tch::no_grad(|| self.policy.loss(&w.narrow(1, 0, t), &w.narrow(1, 1, t), false))?.double_value(&[])
                ],
            )
        })?[0];
        let n = self.val_prompts.len().min(self.cfg.val_prompts);
        let (rank, world) = dist::rank_world(group.as_deref());
        let prompts: Vec<&str> = self.val_prompts[..n].iter().skip(rank).step_by(world).map(String::as_str).collect();
        let mut reward = 0.0;
        if !prompts.is_empty() {
            let rows = self.respond(&prompts, 0.0, 0)?;
            let ids = rows.into_iter().map(|(ids, _)| ids).collect::<Vec<_>>();
            reward = tch::no_grad(|| self.scores(&ids))?.iter().sum();
        }
        let reward = dist::sum_ranks(self.dist.as_deref(), vec![reward])?[0];
        Ok(ValMetrics::from([
            ("val_loss".to_string(), lm / batches as f64),
            ("val_reward".to_string(), reward / n.max(1) as f64),
        ]))
    }

    fn extra_metrics(&self) -> Vec<(&'static str, serde_json::Value)> {
        let s = &self.stats;
        let m = s.minibatches.max(1) as f64;
        vec![
            ("reward", s.reward.into()),
            ("kl", s.kl.into()),
            ("kl_coef", self.kl_coef.double_value(&[0]).into()),
            ("eot_rate", s.eot_rate.into()),
            ("response_len", s.response_len.into()),
            ("ratio", (s.ratio / m).into()),
            ("first_ratio_dev", s.first_ratio_dev.into()),
            ("clip_frac", (s.clip_frac / m).into()),
            ("ptx_loss", (s.ptx_loss / m).into()),
        ]
    }
}

fn read_prompts(path: &Path) -> Result<Vec<String>> {
    read(path, |v| v.get("prompt").and_then(|p| p.as_str()).map(str::to_string).context("lacks a \"prompt\" string"))
}

/// Trains per `file`; with `resume`, continues from `out_dir/checkpoint` exactly.
pub fn ppo(file: &PpoFile, resume: bool) -> Result<TrainSummary> {
    let sft = checkpoint::resolve(&file.policy)?;
    let rm = checkpoint::resolve(&file.reward)?;
    let mut gpt: GptConfig = checkpoint::read_config(&sft)?;
    gpt.dropout = 0.0;
    let mut value_cfg: RewardConfig = checkpoint::read_config(&rm)?;
    value_cfg.gpt.dropout = 0.0;
    let tok_path = sft.join(checkpoint::TOKENIZER_FILE);
    let tok = Tokenizer::from_file(&tok_path)
        .with_context(|| format!("the SFT checkpoint {} needs its tokenizer", sft.display()))?;
    let mut section = file.section(pretraining_lr(&sft))?;
    for prefix in ["value.reward_offset", "kl_coef"] {
        section.groups.insert(0, ParamGroup { prefix: prefix.into(), lr_scale: 1.0, weight_decay: None, frozen: true });
    }
    let cfg = PpoConfig {
        out_dir: file.out_dir.clone(),
        policy: file.policy.clone(),
        reward: file.reward.clone(),
        data: file.data.clone(),
        ppo: file.ppo.clone(),
        train: section.clone(),
        optim: file.optim.clone(),
    };
    let p = &file.ppo;
    dist::ensure_even_shares(&[("ppo.rollouts", p.rollouts)])?;
    if p.ptx_coef > 0.0 {
        dist::ensure_even_shares(&[("ppo.ptx_batch", p.ptx_batch)])?;
    }
    if let Some(env) = dist::DistEnv::from_env()? {
        ensure!(
            p.minibatches <= p.rollouts / env.world_size,
            "ppo.minibatches ({}) cannot exceed each rank's {} rollouts",
            p.minibatches,
            p.rollouts / env.world_size
        );
    }
    let (prompts, val_prompts) = (read_prompts(&file.data.prompts)?, read_prompts(&file.data.val_prompts)?);
    if let Some(hash) = ShardMeta::read(&file.data.pretrain)?.tokenizer_hash {
        ensure!(
            hash == tokenizer_hash(&tok_path)?,
            "{} was tokenized with another tokenizer than the policy's {}: the ptx batches and the held-out loss need the policy's ids",
            file.data.pretrain.display(),
            tok_path.display()
        );
    }
    // Every input is read before the output directory is touched.
    let device = crate::device::parse_device(&section.device)?;
    let block = gpt.block_size as usize;
    let pretrain = WindowSampler::new(TokenShards::open(&file.data.pretrain, "train")?, file.ppo.ptx_batch, block)?;
    let pretrain_val = WindowSampler::new(TokenShards::open(&file.data.pretrain, "val")?, file.ppo.ptx_batch, block)?;
    let reference = checkpoint::load::<Gpt>(&sft, device)?;
    let reward = checkpoint::load::<RewardModel>(&rm, device)?;
    let setup = Setup::begin(&section, &cfg.out_dir, resume, &cfg)?;
    let root = setup.vs.root();
    let mut policy = Gpt::new(&gpt, root.clone())?;
    policy.set_compute_kind(setup.kind);
    let value = RewardModel::new(&value_cfg, &root / "value")?;
    let kl_coef = root.var("kl_coef", &[1], nn::Init::Const(file.ppo.kl_coef));
    if setup.resumed.is_none() {
        checkpoint::load_prefixed(&setup.vs, &sft, "transformer.", "transformer.")?;
        if !gpt.tie_word_embeddings {
            checkpoint::load_prefixed(&setup.vs, &sft, "lm_head.", "lm_head.")?;
        }
        checkpoint::load_prefixed(&setup.vs, &rm, "", "value.")?;
    }
    let model_config = PolicyValueConfig { gpt, value: value_cfg };
    let spi = file.ppo.steps_per_iteration();
    crate::main_eprintln!(
        "[ppo] {} prompts, {} iterations of {} rollouts and {spi} updates, beta {}{}, ptx {}",
        prompts.len(),
        file.ppo.iterations,
        file.ppo.rollouts,
        file.ppo.kl_coef,
        file.ppo.target_kl.map_or(String::new(), |t| format!(" (adaptive to KL {t})")),
        file.ppo.ptx_coef
    );
    let mut trainer = Trainer::new(
        setup,
        RunParts {
            model_config: &model_config,
            tokenizer: Some(tok_path),
            optim: cfg.optim.clone(),
            unit: "updates",
            units_per_step: 1,
            baseline: None,
        },
    )?;
    let seed = trainer.state.sampler.seed;
    let mut obj = Ppo {
        policy,
        value,
        reference: reference.model,
        reward: reward.model,
        kl_coef,
        tok,
        cfg: file.ppo.clone(),
        prompts,
        val_prompts,
        pretrain,
        pretrain_val,
        seed,
        buffer: Vec::new(),
        stats: IterationStats::default(),
        device,
        dist: trainer.group(),
    };
    while !trainer.is_done() {
        let step = trainer.state.step;
        let (it, k) = (step / spi, step % spi);
        if k == 0 {
            obj.rollout(it)?;
        }
        trainer.step(|_| obj.update_loss(it, k, step))?;
        if k + 1 == spi {
            obj.average_update_stats()?;
        }
        trainer.end_step(&mut obj)?;
    }
    trainer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gae_and_token_rewards_match_a_hand_computation() {
        // Three tokens, gamma 1, lambda 0.5: deltas 0.1 + 0.5 - 0.2 = 0.4, 0 + 0.3 - 0.5 = -0.2,
        // 1 + 0 - 0.3 = 0.7; advantages backwards: 0.7, -0.2 + 0.35 = 0.15, 0.4 + 0.075 = 0.475.
        let (adv, ret) = gae(&[0.1, 0.0, 1.0], &[0.2, 0.5, 0.3], 1.0, 0.5);
        for (a, b) in adv.iter().zip([0.475, 0.15, 0.7]) {
            assert!((a - b).abs() < 1e-12, "{adv:?}");
        }
        for (r, b) in ret.iter().zip([0.675, 0.65, 1.0]) {
            assert!((r - b).abs() < 1e-12, "{ret:?}");
        }
        let r = token_rewards(&[-1.0, -2.0], &[-1.5, -2.0], 3.0, 0.1);
        assert!((r[0] + 0.05).abs() < 1e-12 && (r[1] - 3.0).abs() < 1e-12, "{r:?}");
    }

    fn rollout(ids: Vec<i64>, start: usize) -> Rollout {
        Rollout { ids, start, old_logp: vec![], old_values: vec![], adv: vec![], returns: vec![] }
    }

    #[test]
    fn nothing_after_a_responses_end_of_text_enters_the_kl_or_the_loss() {
        // A response that ended early ([7, EOT]) batched beside a longer one: its tokens are the
        // only entries it contributes, and their log-probabilities are those it has alone, so
        // the padding after its end-of-text reaches neither the KL nor the policy loss.
        tch::manual_seed(3);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let cfg = crate::models::gpt::GptConfig {
            vocab_size: 32,
            block_size: 16,
            ..crate::models::gpt::GptConfig::preset("nano").unwrap()
        };
        let model = Gpt::new(&cfg, vs.root()).unwrap();
        let (eot, pad) = (30, 31);
        let short = rollout(vec![1, 2, 7, eot], 2);
        let long = rollout(vec![1, 2, 3, 4, 5, 6, eot], 2);
        let (_, row, pos, tok) = token_batch(&[&short, &long], pad, Device::Cpu);
        assert_eq!(Vec::<i64>::try_from(&row).unwrap(), vec![0, 0, 1, 1, 1, 1, 1]);
        assert_eq!(Vec::<i64>::try_from(&pos).unwrap(), vec![1, 2, 1, 2, 3, 4, 5]);
        assert!(!Vec::<i64>::try_from(&tok).unwrap().contains(&pad));
        let batched = to_vec(&token_logps(&model, &[&short, &long], 1.0, pad, Device::Cpu).unwrap()).unwrap();
        let alone = to_vec(&token_logps(&model, &[&short], 1.0, pad, Device::Cpu).unwrap()).unwrap();
        assert_eq!(batched.len(), 7);
        for (a, b) in batched[..2].iter().zip(&alone) {
            assert!((a - b).abs() < 1e-6, "{batched:?} vs {alone:?}");
        }
    }
}
