//! `gptlab rlhf rm --config FILE.toml [--resume]`: InstructGPT's reward model, trained from the
//! SFT checkpoint on K-wise rankings through the shared [`Trainer`].
//!
//! Each batch element is one prompt with all its K ranked responses, and its loss is the mean
//! over the prompt's C(K, 2) pairs of -log sigmoid(r_better - r_worse), so a prompt counts once
//! however many pairs it has (InstructGPT section 3.5: putting every pair of a prompt in one
//! element avoids overfitting to pairs seen K - 1 times). One epoch by default (more overfits).
//! Validation reports the loss and the held-out pair accuracy. At the last step the reward offset
//! is fitted so that demonstrations (`data.demonstrations`, else each held-out prompt's
//! best-ranked response) score 0 on average, and saved with the weights.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::data::{parse_ranked, parse_sft, read, Ranked};
use crate::chat::{self, Role, Turn};
use crate::checkpoint;
use crate::data::multimodal::LossOn;
use crate::data::sampler::batch_range;
use crate::dist::{self, ProcessGroup};
use crate::models::gpt::GptConfig;
use crate::models::reward::{kwise_loss, RewardConfig, RewardModel};
use crate::tokenizer::Tokenizer;
use crate::train::optim::{AdamWConfig, ParamGroup};
use crate::train::trainer::{epoch_loop, Evaluate, MicroLoss, RunParts, Setup, Trainer, ValMetrics};
use crate::train::{epoch_section, pretraining_lr, EpochRecipe, TrainSection, TrainSummary};

/// The rankings to learn from.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmData {
    /// Preferences or K-wise rankings (see [`super::data`]).
    pub train: PathBuf,
    pub val: PathBuf,
    /// SFT records whose assistant answers should score 0 on average (default: each held-out
    /// prompt's best-ranked response).
    #[serde(default)]
    pub demonstrations: Option<PathBuf>,
}

/// The reward model's own settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RmSection {
    pub epochs: f64,
    pub warmup_fraction: f64,
}

impl Default for RmSection {
    fn default() -> Self {
        Self { epochs: 1.0, warmup_fraction: 0.02 }
    }
}

/// A reward-model run as the user writes it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmFile {
    pub out_dir: PathBuf,
    /// The SFT checkpoint (any GPT checkpoint with the chat markers).
    pub init: PathBuf,
    pub data: RmData,
    #[serde(default)]
    pub rm: RmSection,
    #[serde(default)]
    pub train: toml::Table,
    #[serde(default)]
    pub optim: AdamWConfig,
}

/// The resolved run, written next to the outputs.
#[derive(Clone, Debug, Serialize)]
pub struct RmConfig {
    pub out_dir: PathBuf,
    pub init: PathBuf,
    pub data: RmData,
    pub rm: RmSection,
    pub train: TrainSection,
    pub optim: AdamWConfig,
}

impl RmFile {
    pub fn from_file(path: &Path) -> Result<Self> {
        let file: Self = crate::config::read_toml(path)?;
        let r = &file.rm;
        EpochRecipe::check("rm", r.epochs, r.warmup_fraction).with_context(|| format!("config {}", path.display()))?;
        Ok(file)
    }
}

/// A prompt-response sequence in the chat template, ending in the response's end-of-text.
pub fn encode_response(tok: &Tokenizer, prompt: &str, response: &str) -> Result<Vec<i64>> {
    let text = chat::render(&[Turn::new(Role::User, prompt), Turn::new(Role::Assistant, response)]);
    Ok(tok.encode(&text)?.into_iter().map(i64::from).collect())
}

/// Rankings as token rows: each prompt's responses, and its (better, worse) pairs as indices
/// into them.
struct Rankings {
    prompts: Vec<RankedRows>,
}

/// One prompt's responses as token rows, and its (better, worse) pairs.
struct RankedRows {
    rows: Vec<Vec<i64>>,
    pairs: Vec<(usize, usize)>,
}

/// Each prompt's (better, worse) pairs as row indices into a batch.
type BatchPairs = Vec<Vec<(i64, i64)>>;

/// One forward pass over a batch of prompts.
struct Scored {
    loss: Tensor,
    /// [R]
    rewards: Tensor,
    pairs: BatchPairs,
    positions: usize,
}

fn encode_rankings(path: &Path, tok: &Tokenizer, block: usize) -> Result<Rankings> {
    let ranked = read(path, parse_ranked)?;
    let prompts = ranked
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let rows = r
                .responses
                .iter()
                .map(|resp| encode_response(tok, &r.prompt, resp))
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("{} line {}", path.display(), i + 1))?;
            if let Some(long) = rows.iter().map(Vec::len).find(|&n| n > block) {
                anyhow::bail!(
                    "{} line {}: a response is {long} tokens with its prompt, longer than the model's context of {block}",
                    path.display(),
                    i + 1
                );
            }
            Ok(RankedRows { rows, pairs: r.pairs() })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Rankings { prompts })
}

/// Right-padded rows [R, T], each row's last position [R], and (for several prompts) each
/// prompt's pairs as row indices.
fn batch(rows: &[&Vec<i64>], pad: i64, device: Device) -> (Tensor, Tensor) {
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(1);
    let ids: Vec<i64> =
        rows.iter().flat_map(|r| r.iter().copied().chain(std::iter::repeat_n(pad, width - r.len()))).collect();
    let last: Vec<i64> = rows.iter().map(|r| r.len() as i64 - 1).collect();
    (
        Tensor::from_slice(&ids).view([rows.len() as i64, width as i64]).to_device(device),
        Tensor::from_slice(&last).to_device(device),
    )
}

impl Rankings {
    /// The rows of prompts `idx` and their pairs, renumbered into the batch.
    fn gather(&self, idx: &[usize]) -> (Vec<&Vec<i64>>, BatchPairs) {
        let (mut rows, mut pairs) = (Vec::new(), Vec::new());
        for &i in idx {
            let p = &self.prompts[i];
            let base = rows.len() as i64;
            rows.extend(p.rows.iter());
            pairs.push(p.pairs.iter().map(|&(w, l)| (base + w as i64, base + l as i64)).collect());
        }
        (rows, pairs)
    }
}

struct Objective {
    model: RewardModel,
    /// The demonstrations' mean raw score, fitted after the last step.
    offset: f64,
    val: Rankings,
    demos: Vec<Vec<i64>>,
    batch_size: usize,
    pad: i64,
    device: Device,
    dist: Option<Arc<ProcessGroup>>,
}

impl Objective {
    /// The K-wise loss of prompts `idx`, their rewards, their pairs as row indices, and the
    /// real positions processed.
    fn loss(&self, data: &Rankings, idx: &[usize], train: bool) -> Result<Scored> {
        let (rows, pairs) = data.gather(idx);
        let (ids, last) = batch(&rows, self.pad, self.device);
        let rewards = self.model.rewards(&ids, &last, train)?;
        let positions = rows.iter().map(|r| r.len()).sum();
        Ok(Scored { loss: kwise_loss(&rewards, &pairs), rewards, pairs, positions })
    }

    /// Sets the offset so the demonstrations' mean reward is 0 (their chunks shared among the
    /// ranks).
    fn fit_offset(&mut self) -> Result<()> {
        let _ = tch::no_grad(|| self.model.offset.zero_());
        let chunk = self.batch_size.max(1) * 4;
        let n = self.demos.len();
        let total = dist::sum_over_shards(self.dist.as_deref(), n.div_ceil(chunk), 1, |c| {
            let rows: Vec<&Vec<i64>> = self.demos[batch_range(n, chunk, c)].iter().collect();
            let (ids, last) = batch(&rows, self.pad, self.device);
            Ok(vec![tch::no_grad(|| self.model.rewards(&ids, &last, false))?.sum(tch::Kind::Double).double_value(&[])])
        })?;
        let mean = total[0] / n.max(1) as f64;
        let _ = tch::no_grad(|| self.model.offset.fill_(mean));
        self.offset = mean;
        Ok(())
    }
}

impl Evaluate for Objective {
    fn before_final_checkpoint(&mut self) -> Result<()> {
        self.fit_offset()
    }

    /// Loss and pair accuracy over the held-out prompts, their batches shared among the ranks.
    fn validate(&mut self) -> Result<ValMetrics> {
        let n = self.val.prompts.len();
        let b = self.batch_size;
        let sums = dist::sum_over_shards(self.dist.as_deref(), n.div_ceil(b), 3, |k| {
            let idx: Vec<usize> = batch_range(n, b, k).collect();
            let scored = tch::no_grad(|| self.loss(&self.val, &idx, false))?;
            let r = Vec::<f64>::try_from(scored.rewards.to_kind(tch::Kind::Double))?;
            let pairs: Vec<_> = scored.pairs.iter().flatten().collect();
            let right = pairs.iter().filter(|&&&(w, lo)| r[w as usize] > r[lo as usize]).count();
            Ok(vec![scored.loss.double_value(&[]) * idx.len() as f64, right as f64, pairs.len() as f64])
        })?;
        Ok(ValMetrics::from([
            ("val_loss".to_string(), sums[0] / n.max(1) as f64),
            ("val_pair_acc".to_string(), sums[1] / sums[2].max(1.0)),
        ]))
    }
}

/// What `gptlab rlhf rm` reports.
pub struct RmSummary {
    pub train: TrainSummary,
    /// The demonstrations' mean raw score, now subtracted from every reward.
    pub offset: f64,
}

/// Trains per `file`; with `resume`, continues from `out_dir/checkpoint` exactly.
pub fn train_rm(file: &RmFile, resume: bool) -> Result<RmSummary> {
    let init = checkpoint::resolve(&file.init)?;
    let gpt: GptConfig = checkpoint::read_config(&init)?;
    let tok_path = init.join(checkpoint::TOKENIZER_FILE);
    let tok = Tokenizer::from_file(&tok_path)
        .with_context(|| format!("the SFT checkpoint {} needs its tokenizer", init.display()))?;
    let block = gpt.block_size as usize;
    let train = encode_rankings(&file.data.train, &tok, block)?;
    let val = encode_rankings(&file.data.val, &tok, block)?;
    let demos: Vec<Vec<i64>> = match &file.data.demonstrations {
        Some(path) => read(path, parse_sft)?
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let ex =
                    r.encode(&tok, LossOn::Assistant).with_context(|| format!("{} line {}", path.display(), i + 1))?;
                ensure!(ex.ids.len() <= block, "{} line {}: longer than the context of {block}", path.display(), i + 1);
                Ok(ex.ids)
            })
            .collect::<Result<_>>()?,
        None => read(&file.data.val, parse_ranked)?
            .iter()
            .map(|r: &Ranked| encode_response(&tok, &r.prompt, &r.responses[r.ranking[0]]))
            .collect::<Result<_>>()?,
    };
    let recipe = EpochRecipe {
        epochs: file.rm.epochs,
        warmup_fraction: file.rm.warmup_fraction,
        lr: pretraining_lr(&init).map_or(1e-4, |lr| lr * 0.25),
        batch_size: 8,
    };
    let mut section = epoch_section(&file.train, &recipe, |b| train.prompts.len().div_ceil(b) as u64)?;
    // The offset is fitted, never trained.
    section
        .groups
        .insert(0, ParamGroup { prefix: "reward_offset".into(), lr_scale: 1.0, weight_decay: None, frozen: true });
    let cfg = RmConfig {
        out_dir: file.out_dir.clone(),
        init: file.init.clone(),
        data: file.data.clone(),
        rm: file.rm.clone(),
        train: section.clone(),
        optim: file.optim.clone(),
    };
    let setup = Setup::begin(&section, &cfg.out_dir, resume, &cfg)?;
    let model_cfg = RewardConfig { gpt };
    let mut model = RewardModel::new(&model_cfg, setup.vs.root())?;
    model.gpt.set_compute_kind(setup.kind);
    if setup.resumed.is_none() {
        checkpoint::load_prefixed(&setup.vs, &init, "transformer.", "transformer.")?;
        if !model_cfg.gpt.tie_word_embeddings {
            checkpoint::load_prefixed(&setup.vs, &init, "lm_head.", "lm_head.")?;
        }
    }
    crate::main_eprintln!(
        "[rm] {} ranked prompts ({} held out, {} demonstrations for the offset), {} steps, lr {:.3e}",
        train.prompts.len(),
        val.prompts.len(),
        demos.len(),
        section.max_steps,
        section.lr
    );
    let trainer = Trainer::new(
        setup,
        RunParts {
            model_config: &model_cfg,
            tokenizer: Some(tok_path),
            optim: cfg.optim.clone(),
            unit: "prompts",
            units_per_step: section.examples_per_step(),
            baseline: None,
        },
    )?;
    let device = trainer.device();
    let dist = trainer.group();
    let mut obj = Objective {
        model,
        offset: 0.0,
        val,
        demos,
        batch_size: section.batch_size,
        pad: tok.pad() as i64,
        device,
        dist,
    };
    let summary = epoch_loop(trainer, &mut obj, train.prompts.len(), section.batch_size, |obj, idx| {
        let scored = obj.loss(&train, idx, true)?;
        let t = idx.iter().flat_map(|&j| train.prompts[j].rows.iter().map(Vec::len)).max().unwrap_or(1) as i64;
        let flops = obj.model.cfg.gpt.flops_per_token(t) * scored.positions as f64;
        Ok(MicroLoss::mean_of(scored.loss, idx.len() as f64, flops))
    })?;
    Ok(RmSummary { train: summary, offset: obj.offset })
}
