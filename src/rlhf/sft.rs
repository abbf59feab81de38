//! `gptlab rlhf sft --config FILE.toml [--resume]`: InstructGPT's first stage, supervised
//! fine-tuning on demonstrations, through the shared [`Trainer`].
//!
//! Records are chats in the chat template (see [`super::data`]); the loss is on the assistant's
//! tokens and the end-of-text that closes each of its turns, padding is `<|pad|>` (never the
//! end-of-text, whose prediction the model must learn), and residual dropout is on (InstructGPT:
//! 0.2). Left-out `[train]` keys follow an epoch recipe: 2 epochs, batch 16, warmup over 2% of the
//! steps, decay to 0, a learning rate a quarter of the pretraining one. The checkpoint is a GPT
//! with the same tokenizer: `sample`, `eval` and the later RLHF stages read it as any GPT.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::data::{batch_rows, encode_chat, parse_sft, read, trained_targets, Labelled};
use crate::checkpoint;
use crate::data::sampler::batch_range;
use crate::dist::{self, ProcessGroup};
use crate::models::gpt::{lm_loss, Gpt, GptConfig, Input, Pass};
use crate::tokenizer::Tokenizer;
use crate::train::optim::AdamWConfig;
use crate::train::trainer::{epoch_loop, Evaluate, MicroLoss, RunParts, Setup, Trainer, ValMetrics};
use crate::train::{epoch_section, pretraining_lr, EpochRecipe, TrainSection, TrainSummary};

/// The SFT stage's own settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftSection {
    pub epochs: f64,
    /// Residual, attention and embedding dropout while training (InstructGPT: 0.2).
    pub dropout: f64,
    pub warmup_fraction: f64,
    /// Leave out records longer than the context (with a count) instead of stopping.
    pub skip_too_long: bool,
}

impl Default for SftSection {
    fn default() -> Self {
        Self { epochs: 2.0, dropout: 0.2, warmup_fraction: 0.02, skip_too_long: false }
    }
}

/// The demonstrations: training and held-out records.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftData {
    pub train: PathBuf,
    pub val: PathBuf,
}

/// An SFT run as the user writes it; the resolved [`SftConfig`] is written next to the outputs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftFile {
    pub out_dir: PathBuf,
    /// The pretrained GPT checkpoint; its tokenizer needs the chat markers.
    pub init: PathBuf,
    pub data: SftData,
    #[serde(default)]
    pub sft: SftSection,
    #[serde(default)]
    pub train: toml::Table,
    #[serde(default)]
    pub optim: AdamWConfig,
}

/// The resolved run.
#[derive(Clone, Debug, Serialize)]
pub struct SftConfig {
    pub out_dir: PathBuf,
    pub init: PathBuf,
    pub data: SftData,
    pub sft: SftSection,
    pub train: TrainSection,
    pub optim: AdamWConfig,
}

impl SftFile {
    pub fn from_file(path: &Path) -> Result<Self> {
        let file: Self = crate::config::read_toml(path)?;
        let s = &file.sft;
        EpochRecipe::check("sft", s.epochs, s.warmup_fraction).with_context(|| format!("config {}", path.display()))?;
        ensure!((0.0..1.0).contains(&s.dropout), "config {}: sft.dropout must be in [0, 1)", path.display());
        Ok(file)
    }
}

/// Demonstrations as ids and labels (the id where the position trains, else ignored).
struct Demos {
    examples: Vec<Labelled>,
    skipped: usize,
}

fn load_demos(path: &Path, tok: &Tokenizer, block: usize, skip_too_long: bool) -> Result<Demos> {
    let records = read(path, parse_sft)?;
    let mut examples = Vec::with_capacity(records.len());
    let mut skipped = 0;
    for (i, r) in records.iter().enumerate() {
        let (ids, labels) = encode_chat(r, tok).with_context(|| format!("{} line {}", path.display(), i + 1))?;
        if ids.len() > block {
            ensure!(
                skip_too_long,
                "{} line {}: {} tokens, longer than the model's context of {block} (set sft.skip_too_long = true to leave such records out)",
                path.display(),
                i + 1,
                ids.len()
            );
            skipped += 1;
            continue;
        }
        examples.push((ids, labels));
    }
    ensure!(!examples.is_empty(), "{}: no record fits the model's context of {block}", path.display());
    Ok(Demos { examples, skipped })
}

/// Mean cross-entropy over the trained positions of a batch.
fn loss(model: &Gpt, ids: &Tensor, targets: &Tensor, train: bool) -> Result<Tensor> {
    let t = ids.size()[1];
    let logits = model.forward(Input::Tokens(ids), Pass { train, ..Default::default() })?; // [B, T, V]
    Ok(lm_loss(&logits.narrow(1, 0, t - 1), targets))
}

struct Objective {
    model: Gpt,
    val: Demos,
    batch_size: usize,
    pad: i64,
    device: Device,
    dist: Option<Arc<ProcessGroup>>,
}

impl Evaluate for Objective {
    /// The mean of the held-out batches' losses, the batches shared among the ranks.
    fn validate(&mut self) -> Result<ValMetrics> {
        let n = self.val.examples.len();
        let batches = n.div_ceil(self.batch_size);
        let total = dist::sum_over_shards(self.dist.as_deref(), batches, 1, |b| {
            let idx: Vec<usize> = batch_range(n, self.batch_size, b).collect();
            let rows: Vec<&Labelled> = idx.iter().map(|&i| &self.val.examples[i]).collect();
            let (ids, targets, _) = batch_rows(&rows, self.pad, self.device);
            Ok(vec![tch::no_grad(|| loss(&self.model, &ids, &targets, false))?.double_value(&[])])
        })?;
        Ok(ValMetrics::from([("val_loss".to_string(), total[0] / batches.max(1) as f64)]))
    }
}

/// Trains per `file`; with `resume`, continues from `out_dir/checkpoint` exactly.
pub fn sft(file: &SftFile, resume: bool) -> Result<TrainSummary> {
    let init = checkpoint::resolve(&file.init)?;
    let mut gpt: GptConfig = checkpoint::read_config(&init)?;
    gpt.dropout = file.sft.dropout;
    let tok_path = init.join(checkpoint::TOKENIZER_FILE);
    let tok = Tokenizer::from_file(&tok_path)
        .with_context(|| format!("the GPT checkpoint {} needs its tokenizer", init.display()))?;
    for marker in crate::special::ALL {
        ensure!(tok.token_to_id(marker).is_some(), "{}: the tokenizer lacks {marker}", tok_path.display());
    }
    let block = gpt.block_size as usize;
    let s = &file.sft;
    let train = load_demos(&file.data.train, &tok, block, s.skip_too_long)?;
    let val = load_demos(&file.data.val, &tok, block, s.skip_too_long)?;
    if train.skipped + val.skipped > 0 {
        crate::main_eprintln!("warning: left out {} records longer than the context", train.skipped + val.skipped);
    }
    let recipe = EpochRecipe {
        epochs: s.epochs,
        warmup_fraction: s.warmup_fraction,
        lr: pretraining_lr(&init).map_or(1e-4, |lr| lr * 0.25),
        batch_size: 16,
    };
    let section = epoch_section(&file.train, &recipe, |b| train.examples.len().div_ceil(b) as u64)?;
    let cfg = SftConfig {
        out_dir: file.out_dir.clone(),
        init: file.init.clone(),
        data: file.data.clone(),
        sft: file.sft.clone(),
        train: section.clone(),
        optim: file.optim.clone(),
    };
    let setup = Setup::begin(&section, &cfg.out_dir, resume, &cfg)?;
    let model = super::decoder(&gpt, &setup, &init)?;
    crate::main_eprintln!(
        "[sft] {} demonstrations ({} held out), {} steps, lr {:.3e}, dropout {}",
        train.examples.len(),
        val.examples.len(),
        section.max_steps,
        section.lr,
        s.dropout
    );
    let trainer = Trainer::new(
        setup,
        RunParts {
            model_config: &gpt,
            tokenizer: Some(tok_path),
            optim: cfg.optim.clone(),
            unit: "examples",
            units_per_step: section.examples_per_step(),
            baseline: None,
        },
    )?;
    let device = trainer.device();
    let dist = trainer.group();
    let mut objective = Objective { model, val, batch_size: section.batch_size, pad: tok.pad() as i64, device, dist };
    epoch_loop(trainer, &mut objective, train.examples.len(), section.batch_size, |obj, idx| {
        let rows: Vec<&Labelled> = idx.iter().map(|&i| &train.examples[i]).collect();
        let (ids, targets, positions) = batch_rows(&rows, obj.pad, obj.device);
        let flops = obj.model.cfg.flops_per_token(ids.size()[1]) * positions as f64;
        Ok(MicroLoss::mean_of(loss(&obj.model, &ids, &targets, true)?, trained_targets(&rows) as f64, flops))
    })
}
