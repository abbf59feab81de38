//! GPT-1's fine-tuned model: the pretrained decoder unchanged, plus one linear head per task on
//! the final hidden state of the `extract` token (GPT-1 section 3.3). The decoder keeps its LM
//! head, so the auxiliary LM loss needs nothing new and a fine-tuned checkpoint still samples.
//!
//! Inputs are GPT-1's traversal-style transformations (see [`crate::finetune::data`]): every
//! sequence ends in `extract`; a similarity example is two sequences (both orders) whose
//! representations are added; a multiple-choice example is one sequence per choice, each scored
//! by a one-output head and normalised by a softmax over the choices.
//!
//! Shapes: B examples, R sequences (rows), T time, C = n_embd, K classes or choices.

use anyhow::{ensure, Result};
use gptlab_nn::Linear;
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use super::gpt::{lm_loss, Gpt, GptConfig, Input, Pass, IGNORE_INDEX};

/// GPT-1's four task types, each with its own input layout and head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskType {
    /// `start text extract` -> K classes.
    Classification,
    /// `start premise delim hypothesis extract` -> K classes.
    Entailment,
    /// `start a delim b extract` and `start b delim a extract`, representations added -> K classes.
    Similarity,
    /// `start context delim choice_i extract` per choice -> one score each, softmax over choices.
    MultipleChoice,
}

impl TaskType {
    pub const ALL: [TaskType; 4] =
        [TaskType::Classification, TaskType::Entailment, TaskType::Similarity, TaskType::MultipleChoice];

    pub fn name(self) -> &'static str {
        match self {
            TaskType::Classification => "classification",
            TaskType::Entailment => "entailment",
            TaskType::Similarity => "similarity",
            TaskType::MultipleChoice => "multiple_choice",
        }
    }

    /// Sequences per example: two for similarity, one per choice for multiple choice.
    pub fn rows_per_example(self, choices: usize) -> usize {
        match self {
            TaskType::Similarity => 2,
            TaskType::MultipleChoice => choices,
            _ => 1,
        }
    }
}

/// One task's head: its layout, its answers, and the token that names it in a multitask model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadSpec {
    pub name: String,
    pub task_type: TaskType,
    /// Class names (classification, entailment, similarity); empty for multiple choice.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Choices per example (multiple choice only).
    #[serde(default)]
    pub choices: usize,
    /// The task's own token after `start`, in a model fine-tuned on several tasks at once.
    #[serde(default)]
    pub task_token: Option<i64>,
}

impl HeadSpec {
    /// Outputs of the head: one per class, or one score per choice.
    pub fn outputs(&self) -> i64 {
        match self.task_type {
            TaskType::MultipleChoice => 1,
            _ => self.classes.len() as i64,
        }
    }

    /// Answers an example picks from: classes, or choices.
    pub fn answers(&self) -> usize {
        match self.task_type {
            TaskType::MultipleChoice => self.choices,
            _ => self.classes.len(),
        }
    }
}

/// A fine-tuned checkpoint's `config.json` (family `gpt-finetuned`): the decoder's config, the
/// ids of the added tokens, and the heads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetunedConfig {
    pub gpt: GptConfig,
    pub start_token: i64,
    pub delim_token: i64,
    pub extract_token: i64,
    pub heads: Vec<HeadSpec>,
}

impl FinetunedConfig {
    pub fn validate(&self) -> Result<()> {
        self.gpt.validate()?;
        let v = self.gpt.vocab_size;
        for (name, id) in [("start", self.start_token), ("delim", self.delim_token), ("extract", self.extract_token)]
            .into_iter()
            .chain(self.heads.iter().filter_map(|h| h.task_token.map(|t| (h.name.as_str(), t))))
        {
            ensure!((0..v).contains(&id), "the {name} token id {id} is outside the vocabulary of {v}");
        }
        ensure!(!self.heads.is_empty(), "a fine-tuned model needs at least one task head");
        for h in &self.heads {
            ensure!(
                h.answers() >= 2,
                "task {}: needs at least two {}",
                h.name,
                if h.task_type == TaskType::MultipleChoice { "choices" } else { "classes" }
            );
        }
        Ok(())
    }

    pub fn head(&self, name: &str) -> Option<(usize, &HeadSpec)> {
        self.heads.iter().enumerate().find(|(_, h)| h.name == name)
    }
}

/// A batch of one task's examples, already laid out: `ids` [R, T] right-padded (causal attention
/// keeps padding out of every real position), `extract` [R] the position of each row's
/// `extract` token, `lm_targets` [R, T] the next tokens with padding ignored, `labels` [B].
pub struct TaskBatch {
    pub head: usize,
    pub ids: Tensor,
    pub extract: Tensor,
    pub lm_targets: Tensor,
    pub labels: Tensor,
    /// Real (unpadded) positions, for FLOPs.
    pub positions: usize,
}

/// The task loss, the LM loss and the logits of one forward pass; GPT-1 trains on
/// `task + lm_coef * lm`.
pub struct Losses {
    pub task: Tensor,
    pub lm: Tensor,
    /// [B, K]: class logits, or choice scores.
    pub logits: Tensor,
}

/// The decoder and its task heads.
#[derive(Debug)]
pub struct FinetunedGpt {
    pub cfg: FinetunedConfig,
    pub gpt: Gpt,
    heads: Vec<Linear>,
    /// Dropout on the extract state before the head (GPT-1: 0.1).
    pub head_dropout: f64,
}

impl FinetunedGpt {
    /// The decoder's variables under `p` (same names as a GPT checkpoint's), the heads under
    /// `heads.<task>`, initialised as GPT-2 initialises a Linear.
    pub fn new(cfg: &FinetunedConfig, p: nn::Path) -> Result<Self> {
        cfg.validate()?;
        let gpt = Gpt::new(&cfg.gpt, p.clone())?;
        let heads = cfg
            .heads
            .iter()
            .map(|h| Linear::new(&p / "heads" / &h.name, cfg.gpt.n_embd, h.outputs(), 0.02, true))
            .collect();
        Ok(Self { cfg: cfg.clone(), gpt, heads, head_dropout: 0.1 })
    }

    /// Task logits [B, K] from the hidden states [R, T, C] of a batch of head `head`.
    pub fn head_logits(&self, head: usize, hidden: &Tensor, extract: &Tensor, train: bool) -> Tensor {
        let spec = &self.cfg.heads[head];
        let (r, _, c) = hidden.size3().unwrap_or((0, 0, 0));
        let rows = Tensor::arange(r, (Kind::Int64, hidden.device()));
        let h = hidden.index(&[Some(rows), Some(extract.shallow_clone())]); // [R, C]
        let per = spec.task_type.rows_per_example(spec.choices) as i64;
        let h = match spec.task_type {
            TaskType::Similarity => h.view([r / 2, 2, c]).sum_dim_intlist(1, false, Kind::Float), // [B, C]
            _ => h,
        };
        let out = self.heads[head].forward(&h.dropout(self.head_dropout, train), Kind::Float); // [B or R, K or 1]
        match spec.task_type {
            TaskType::MultipleChoice => out.view([r / per, per]), // [B, choices]
            _ => out,
        }
    }

    /// GPT-1's objective on one batch: the task's cross-entropy, and the LM loss on the same
    /// sequences (computed only when `with_lm`, else zero).
    pub fn losses(&self, batch: &TaskBatch, with_lm: bool, train: bool) -> Result<Losses> {
        let hidden = self.gpt.hidden(Input::Tokens(&batch.ids), Pass { train, ..Default::default() })?; // [R, T, C]
        let logits = self.head_logits(batch.head, &hidden, &batch.extract, train);
        let task = logits.cross_entropy_for_logits(&batch.labels);
        let lm = if with_lm {
            lm_loss(&self.gpt.lm_head(&hidden), &batch.lm_targets)
        } else {
            Tensor::zeros([], (Kind::Float, hidden.device()))
        };
        Ok(Losses { task, lm, logits })
    }
}

/// Next-token targets of a right-padded row of `len` real tokens: `ids` shifted left; the last
/// real position (`extract`, which has no next token) and the padding are ignored.
pub fn lm_targets(ids: &[i64], len: usize) -> Vec<i64> {
    (0..ids.len()).map(|t| if t + 1 < len { ids[t + 1] } else { IGNORE_INDEX }).collect()
}
