//! Fine-tuning data: records in one JSONL format per task type, checked and laid out as GPT-1's
//! input transformations, and the batches a step trains on.
//!
//! | type              | record                                           | rows per example                     |
//! |-------------------|--------------------------------------------------|--------------------------------------|
//! | `classification`  | `{"text", "label"}`                              | `start text extract`                 |
//! | `entailment`      | `{"premise", "hypothesis", "label"}`             | `start premise delim hypothesis extract` |
//! | `similarity`      | `{"text_a", "text_b", "label"}`                  | `start a delim b extract`, `start b delim a extract` |
//! | `multiple_choice` | `{"context", "choices": [...], "label"}`         | `start context delim choice extract` per choice |
//!
//! `label` is a class (or choice) index, or a string: a class name from the task's `classes`, or
//! the text of one of the choices. A multitask model puts the task's own token after `start`.

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tch::{Device, Tensor};

use crate::models::finetuned::{lm_targets, HeadSpec, TaskBatch, TaskType};
use crate::tokenizer::Tokenizer;

/// What to do with an example longer than the context.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TooLong {
    /// Stop with an error naming the record.
    #[default]
    Error,
    /// Cut the longest text from its start until the row fits, and count the examples cut.
    Truncate,
}

/// The ids of GPT-1's added tokens, and padding.
#[derive(Clone, Copy, Debug)]
pub struct Specials {
    pub start: i64,
    pub delim: i64,
    pub extract: i64,
    pub pad: i64,
}

/// One example: its rows of token ids (each ending in `extract`) and its answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub rows: Vec<Vec<i64>>,
    pub label: i64,
}

/// A task's examples, laid out for one head.
pub struct TaskData {
    pub head: usize,
    pub examples: Vec<Example>,
    /// Examples cut to fit the context (`too_long = "truncate"`).
    pub truncated: usize,
}

/// The texts of each row of a record, and its answer, checked against the task's spec.
pub fn record_fields(spec: &HeadSpec, record: &Value) -> Result<(Vec<Vec<String>>, i64)> {
    let text = |key: &str| -> Result<String> {
        match record.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => bail!("field {key:?} must be a string"),
            None => bail!("lacks field {key:?} (a {} record is {})", spec.task_type.name(), format_of(spec.task_type)),
        }
    };
    let rows = match spec.task_type {
        TaskType::Classification => vec![vec![text("text")?]],
        TaskType::Entailment => vec![vec![text("premise")?, text("hypothesis")?]],
        TaskType::Similarity => {
            let (a, b) = (text("text_a")?, text("text_b")?);
            vec![vec![a.clone(), b.clone()], vec![b, a]]
        }
        TaskType::MultipleChoice => {
            let context = text("context")?;
            let choices = match record.get("choices") {
                Some(Value::Array(c)) => c
                    .iter()
                    .map(|c| c.as_str().map(str::to_string).context("every choice must be a string"))
                    .collect::<Result<Vec<_>>>()?,
                _ => bail!("lacks a \"choices\" list (a multiple_choice record is {})", format_of(spec.task_type)),
            };
            ensure!(
                choices.len() == spec.choices,
                "has {} choices, but the task's records have {} (every record needs the same number)",
                choices.len(),
                spec.choices
            );
            choices.into_iter().map(|c| vec![context.clone(), c]).collect()
        }
    };
    let answers: Vec<String> = match spec.task_type {
        TaskType::MultipleChoice => rows.iter().map(|r| r[1].clone()).collect(),
        _ => spec.classes.clone(),
    };
    let what = if spec.task_type == TaskType::MultipleChoice { "choices" } else { "classes" };
    let label = match record.get("label") {
        Some(Value::Number(n)) => {
            let i = n.as_i64().with_context(|| format!("label {n} must be an integer index or a string"))?;
            ensure!(
                (0..answers.len() as i64).contains(&i),
                "label {n} is outside the {} {what} {answers:?}",
                answers.len()
            );
            i
        }
        Some(Value::String(s)) => answers
            .iter()
            .position(|a| a == s)
            .with_context(|| format!("label {s:?} is not one of the {what} {answers:?}"))?
            as i64,
        Some(_) => bail!("label must be an index or a string"),
        None => bail!("lacks field \"label\""),
    };
    Ok((rows, label))
}

fn format_of(t: TaskType) -> &'static str {
    match t {
        TaskType::Classification => "{\"text\", \"label\"}",
        TaskType::Entailment => "{\"premise\", \"hypothesis\", \"label\"}",
        TaskType::Similarity => "{\"text_a\", \"text_b\", \"label\"}",
        TaskType::MultipleChoice => "{\"context\", \"choices\": [...], \"label\"}",
    }
}

/// How rows are laid out: the added tokens, the model's context and what to do beyond it.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub specials: Specials,
    pub block: usize,
    pub too_long: TooLong,
}

impl Layout {
    /// One row: `start [task] seg_1 delim seg_2 ... extract`, cut to `block` tokens when
    /// `too_long` allows (the longest segment loses tokens from its start). Returns the row and
    /// whether it was cut.
    pub fn row(&self, mut segments: Vec<Vec<i64>>, task_token: Option<i64>) -> Result<(Vec<i64>, bool)> {
        let (sp, block, too_long) = (&self.specials, self.block, self.too_long);
        let fixed = 2 + task_token.is_some() as usize + segments.len() - 1;
        let len = |segs: &[Vec<i64>]| fixed + segs.iter().map(Vec::len).sum::<usize>();
        let full = len(&segments);
        if full > block {
            ensure!(
            too_long == TooLong::Truncate,
            "is {full} tokens laid out, longer than the model's context of {block} (set finetune.too_long = \"truncate\" to cut it)"
        );
            ensure!(fixed < block, "the context of {block} tokens cannot hold the layout's {fixed} added tokens");
            while len(&segments) > block {
                let longest = (0..segments.len()).max_by_key(|&i| segments[i].len()).unwrap_or(0);
                let cut = (len(&segments) - block).min(segments[longest].len());
                segments[longest].drain(..cut);
            }
        }
        let mut row = vec![sp.start];
        row.extend(task_token);
        for (i, seg) in segments.into_iter().enumerate() {
            if i > 0 {
                row.push(sp.delim);
            }
            row.extend(seg);
        }
        row.push(sp.extract);
        Ok((row, full > block))
    }

    /// Checks and lays out a task's records; `source` names them in errors ("FILE record N: ...").
    pub fn encode(
        &self,
        head: usize,
        spec: &HeadSpec,
        records: &[Value],
        tok: &Tokenizer,
        source: &str,
    ) -> Result<TaskData> {
        let mut examples = Vec::with_capacity(records.len());
        let mut truncated = 0;
        for (i, record) in records.iter().enumerate() {
            let at = || format!("{source} record {}", i + 1);
            let (rows, label) = record_fields(spec, record).with_context(at)?;
            let mut out = Vec::with_capacity(rows.len());
            let mut cut_any = false;
            for texts in rows {
                let segments = texts
                    .iter()
                    .map(|t| Ok(tok.encode(t)?.into_iter().map(i64::from).collect()))
                    .collect::<Result<Vec<Vec<i64>>>>()
                    .with_context(at)?;
                let (row, cut) = self.row(segments, spec.task_token).with_context(at)?;
                cut_any |= cut;
                out.push(row);
            }
            truncated += cut_any as usize;
            examples.push(Example { rows: out, label });
        }
        Ok(TaskData { head, examples, truncated })
    }
}

impl TaskData {
    /// The examples at `indices` as one batch on `device`.
    pub fn batch(&self, indices: &[usize], pad: i64, device: Device) -> TaskBatch {
        let rows: Vec<&Vec<i64>> = indices.iter().flat_map(|&i| &self.examples[i].rows).collect();
        let width = rows.iter().map(|r| r.len()).max().unwrap_or(1);
        let (mut ids, mut targets, mut extract) = (Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            let mut padded = row.to_vec();
            padded.resize(width, pad);
            targets.extend(lm_targets(&padded, row.len()));
            ids.extend(padded);
            extract.push(row.len() as i64 - 1);
        }
        let labels: Vec<i64> = indices.iter().map(|&i| self.examples[i].label).collect();
        let shape = [rows.len() as i64, width as i64];
        TaskBatch {
            head: self.head,
            ids: Tensor::from_slice(&ids).view(shape).to_device(device),
            extract: Tensor::from_slice(&extract).to_device(device),
            lm_targets: Tensor::from_slice(&targets).view(shape).to_device(device),
            labels: Tensor::from_slice(&labels).to_device(device),
            positions: rows.iter().map(|r| r.len()).sum(),
        }
    }
}
