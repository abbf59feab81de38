//! `gptlab rlhf dpo --config FILE.toml [--resume]`: Direct Preference Optimization (Rafailov et
//! al., 2023) on the same preference data as the reward model, without one: the policy starts
//! from the SFT checkpoint, which also stays as the frozen reference, and each (chosen, rejected)
//! pair is scored by
//!
//! `-log sigmoid(beta * ((log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))))`
//!
//! with sequence log-probabilities summed over the response's tokens and its end-of-text
//! (beta 0.1). K-wise rankings give all their C(K, 2) pairs. The reference's log-probabilities
//! are computed once before training (the reference never changes, dropout off). Validation
//! reports the loss, the share of pairs whose implicit reward prefers the chosen response, and
//! the mean margin.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::data::{batch_rows, encode_chat, parse_ranked, read, Labelled};
use crate::chat::Role;
use crate::checkpoint;
use crate::data::multimodal::{Message, Part, Record};
use crate::data::sampler::batch_range;
use crate::dist::{self, ProcessGroup};
use crate::models::gpt::{Gpt, GptConfig, Input, Pass, IGNORE_INDEX};
use crate::tokenizer::Tokenizer;
use crate::train::optim::AdamWConfig;
use crate::train::trainer::{epoch_loop, Evaluate, MicroLoss, RunParts, Setup, Trainer, ValMetrics};
use crate::train::{epoch_section, pretraining_lr, EpochRecipe, TrainSection, TrainSummary};

/// The preference data.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpoData {
    /// Preferences or K-wise rankings (see [`super::data`]).
    pub train: PathBuf,
    pub val: PathBuf,
}

/// DPO's own settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpoSection {
    pub beta: f64,
    pub epochs: f64,
    pub warmup_fraction: f64,
}

impl Default for DpoSection {
    fn default() -> Self {
        Self { beta: 0.1, epochs: 1.0, warmup_fraction: 0.02 }
    }
}

/// A DPO run as the user writes it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpoFile {
    pub out_dir: PathBuf,
    /// The SFT checkpoint: the policy's start and the reference.
    pub init: PathBuf,
    pub data: DpoData,
    #[serde(default)]
    pub dpo: DpoSection,
    #[serde(default)]
    pub train: toml::Table,
    #[serde(default)]
    pub optim: AdamWConfig,
}

/// The resolved run, written next to the outputs.
#[derive(Clone, Debug, Serialize)]
pub struct DpoConfig {
    pub out_dir: PathBuf,
    pub init: PathBuf,
    pub data: DpoData,
    pub dpo: DpoSection,
    pub train: TrainSection,
    pub optim: AdamWConfig,
}

impl DpoFile {
    pub fn from_file(path: &Path) -> Result<Self> {
        let file: Self = crate::config::read_toml(path)?;
        let d = &file.dpo;
        ensure!(d.beta > 0.0 && d.beta.is_finite(), "config {}: dpo.beta must be positive", path.display());
        EpochRecipe::check("dpo", d.epochs, d.warmup_fraction).with_context(|| format!("config {}", path.display()))?;
        Ok(file)
    }
}

/// DPO's loss per pair from the four sequence log-probabilities (each [P]): the mean over pairs
/// of -log sigmoid(beta * margin), and the implicit reward margins themselves.
pub fn dpo_loss(policy_w: &Tensor, policy_l: &Tensor, ref_w: &Tensor, ref_l: &Tensor, beta: f64) -> (Tensor, Tensor) {
    let margin = ((policy_w - ref_w) - (policy_l - ref_l)) * beta; // [P]
    (-margin.log_sigmoid().mean(Kind::Float), margin)
}

/// Summed log-probabilities [R] of each row's trained tokens (`targets` [R, T - 1], ignored
/// positions left out).
pub fn sequence_logps(model: &Gpt, ids: &Tensor, targets: &Tensor, train: bool) -> Result<Tensor> {
    let t = ids.size()[1];
    let logits = model.forward(Input::Tokens(ids), Pass { train, ..Default::default() })?; // [R, T, V]
    let logp = logits.narrow(1, 0, t - 1).log_softmax(-1, Kind::Float); // [R, T-1, V]
    let mask = targets.ne(IGNORE_INDEX); // [R, T-1]
    let picked = logp.gather(2, &targets.clamp_min(0).unsqueeze(-1), false).squeeze_dim(-1); // [R, T-1]
    Ok((picked * mask.to_kind(Kind::Float)).sum_dim_intlist(1, false, Kind::Float))
}

/// Preference pairs as chats, with the reference's log-probabilities of both responses.
struct Pairs {
    chosen: Vec<Labelled>,
    rejected: Vec<Labelled>,
    ref_chosen: Vec<f64>,
    ref_rejected: Vec<f64>,
}

fn chat(prompt: &str, response: &str) -> Record {
    Record::Chat(vec![
        Message { role: Role::User, parts: vec![Part::Text(prompt.to_string())] },
        Message { role: Role::Assistant, parts: vec![Part::Text(response.to_string())] },
    ])
}

fn load_pairs(path: &Path, tok: &Tokenizer, block: usize) -> Result<Pairs> {
    let ranked = read(path, parse_ranked)?;
    let (mut chosen, mut rejected) = (Vec::new(), Vec::new());
    for (i, r) in ranked.iter().enumerate() {
        let at = || format!("{} line {}", path.display(), i + 1);
        let rows = r
            .responses
            .iter()
            .map(|resp| encode_chat(&chat(&r.prompt, resp), tok))
            .collect::<Result<Vec<_>>>()
            .with_context(at)?;
        if let Some(n) = rows.iter().map(|x| x.0.len()).find(|&n| n > block) {
            anyhow::bail!(
                "{}: a response is {n} tokens with its prompt, longer than the model's context of {block}",
                at()
            );
        }
        for (w, l) in r.pairs() {
            chosen.push(rows[w].clone());
            rejected.push(rows[l].clone());
        }
    }
    Ok(Pairs { chosen, rejected, ref_chosen: Vec::new(), ref_rejected: Vec::new() })
}

impl Pairs {
    /// The rows of pairs `idx`: chosen ones first, then rejected.
    fn rows(&self, idx: &[usize]) -> Vec<&Labelled> {
        idx.iter().map(|&i| &self.chosen[i]).chain(idx.iter().map(|&i| &self.rejected[i])).collect()
    }

    /// Fills the reference's log-probabilities, in batches of `b` pairs.
    /// Under data parallelism each rank scores every `world_size`-th batch, and a sum over the
    /// ranks fills in the rest.
    fn score_reference(
        &mut self,
        reference: &Gpt,
        b: usize,
        pad: i64,
        device: Device,
        group: Option<&ProcessGroup>,
    ) -> Result<()> {
        let n = self.chosen.len();
        let (rank, world) = dist::rank_world(group);
        let mut scores = vec![0.0; 2 * n]; // chosen, then rejected
        for k in (0..n.div_ceil(b)).filter(|k| k % world == rank) {
            let range = batch_range(n, b, k);
            let idx: Vec<usize> = range.clone().collect();
            let (ids, targets, _) = batch_rows(&self.rows(&idx), pad, device);
            let lp = tch::no_grad(|| sequence_logps(reference, &ids, &targets, false))?;
            let lp = Vec::<f64>::try_from(lp.to_kind(Kind::Double))?;
            scores[range.clone()].copy_from_slice(&lp[..idx.len()]);
            scores[n + range.start..n + range.end].copy_from_slice(&lp[idx.len()..]);
        }
        let mut scores = dist::sum_ranks(group, scores)?;
        self.ref_rejected = scores.split_off(n);
        self.ref_chosen = scores;
        Ok(())
    }
}

struct Objective {
    policy: Gpt,
    val: Pairs,
    beta: f64,
    batch_size: usize,
    pad: i64,
    device: Device,
    dist: Option<Arc<ProcessGroup>>,
}

impl Objective {
    /// The loss and margins of pairs `idx`, and the real positions processed.
    fn loss(&self, data: &Pairs, idx: &[usize], train: bool) -> Result<(Tensor, Tensor, usize)> {
        let (ids, targets, positions) = batch_rows(&data.rows(idx), self.pad, self.device);
        let lp = sequence_logps(&self.policy, &ids, &targets, train)?; // [2P]
        let p = idx.len() as i64;
        let refs = |v: &[f64]| {
            Tensor::from_slice(&idx.iter().map(|&i| v[i] as f32).collect::<Vec<_>>()).to_device(self.device)
        };
        let (loss, margin) = dpo_loss(
            &lp.narrow(0, 0, p),
            &lp.narrow(0, p, p),
            &refs(&data.ref_chosen),
            &refs(&data.ref_rejected),
            self.beta,
        );
        Ok((loss, margin, positions))
    }
}

impl Evaluate for Objective {
    /// Loss, reward accuracy and margin over the held-out pairs, their batches shared among the
    /// ranks.
    fn validate(&mut self) -> Result<ValMetrics> {
        let n = self.val.chosen.len();
        let b = self.batch_size;
        let sums = dist::sum_over_shards(self.dist.as_deref(), n.div_ceil(b), 3, |k| {
            let idx: Vec<usize> = batch_range(n, b, k).collect();
            let (l, m, _) = tch::no_grad(|| self.loss(&self.val, &idx, false))?;
            let margins = Vec::<f64>::try_from(m.to_kind(Kind::Double))?;
            Ok(vec![
                l.double_value(&[]) * idx.len() as f64,
                margins.iter().filter(|&&m| m > 0.0).count() as f64,
                margins.iter().sum::<f64>(),
            ])
        })?;
        let n = n.max(1) as f64;
        Ok(ValMetrics::from([
            ("val_loss".to_string(), sums[0] / n),
            ("val_reward_acc".to_string(), sums[1] / n),
            ("val_margin".to_string(), sums[2] / n),
        ]))
    }
}

/// Trains per `file`; with `resume`, continues from `out_dir/checkpoint` exactly.
pub fn dpo(file: &DpoFile, resume: bool) -> Result<TrainSummary> {
    let init = checkpoint::resolve(&file.init)?;
    let mut gpt: GptConfig = checkpoint::read_config(&init)?;
    // Dropout off, as TRL's DPO trainer does: the policy's log-probabilities must be comparable
    // with the reference's, which are computed without it.
    gpt.dropout = 0.0;
    let tok_path = init.join(checkpoint::TOKENIZER_FILE);
    let tok = Tokenizer::from_file(&tok_path)
        .with_context(|| format!("the SFT checkpoint {} needs its tokenizer", init.display()))?;
    let block = gpt.block_size as usize;
    let mut train = load_pairs(&file.data.train, &tok, block)?;
    let mut val = load_pairs(&file.data.val, &tok, block)?;
    let recipe = EpochRecipe {
        epochs: file.dpo.epochs,
        warmup_fraction: file.dpo.warmup_fraction,
        lr: pretraining_lr(&init).map_or(1e-5, |lr| lr * 0.05),
        batch_size: 8,
    };
    let section = epoch_section(&file.train, &recipe, |b| train.chosen.len().div_ceil(b) as u64)?;
    let cfg = DpoConfig {
        out_dir: file.out_dir.clone(),
        init: file.init.clone(),
        data: file.data.clone(),
        dpo: file.dpo.clone(),
        train: section.clone(),
        optim: file.optim.clone(),
    };
    // The reference is read before the output directory is touched; it scores the pairs once
    // the data-parallel group (if any) exists, to share the work out.
    let device = crate::device::parse_device(&section.device)?;
    let pad = tok.pad() as i64;
    let reference = checkpoint::load::<Gpt>(&init, device)?;
    let setup = Setup::begin(&section, &cfg.out_dir, resume, &cfg)?;
    let group = setup.dist.clone();
    train.score_reference(&reference.model, section.batch_size, pad, setup.device, group.as_deref())?;
    val.score_reference(&reference.model, section.batch_size, pad, setup.device, group.as_deref())?;
    drop(reference);
    let policy = super::decoder(&gpt, &setup, &init)?;
    crate::main_eprintln!(
        "[dpo] {} preference pairs ({} held out), beta {}, {} steps, lr {:.3e}",
        train.chosen.len(),
        val.chosen.len(),
        file.dpo.beta,
        section.max_steps,
        section.lr
    );
    let trainer = Trainer::new(
        setup,
        RunParts {
            model_config: &gpt,
            tokenizer: Some(tok_path),
            optim: cfg.optim.clone(),
            unit: "pairs",
            units_per_step: section.examples_per_step(),
            baseline: None,
        },
    )?;
    let dist = trainer.group();
    let mut obj = Objective { policy, val, beta: file.dpo.beta, batch_size: section.batch_size, pad, device, dist };
    epoch_loop(trainer, &mut obj, train.chosen.len(), section.batch_size, |obj, idx| {
        let (loss, _, positions) = obj.loss(&train, idx, true)?;
        let flops = obj.policy.cfg.flops_per_token(block_of(&train, idx)) * positions as f64;
        Ok(MicroLoss::mean_of(loss, idx.len() as f64, flops))
    })
}

fn block_of(p: &Pairs, idx: &[usize]) -> i64 {
    idx.iter().map(|&i| p.chosen[i].0.len().max(p.rejected[i].0.len())).max().unwrap_or(1) as i64
}
