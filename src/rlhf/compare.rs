//! `gptlab rlhf compare`: the labeler's verdict on several models' answers to the same held-out
//! prompts, InstructGPT's headline measurement (how often one model's output is preferred to
//! another's). Each model answers every prompt greedily in the chat template; the labeler judges
//! each answer (safe, correct, format, length) and every pair of models on every prompt (a tie
//! counts half).

use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::data::read;
use super::labeler::{Judgement, LabelPrompt};
use crate::chat::{self, Role, Turn};
use crate::checkpoint;
use crate::eval::model::display_name;
use crate::infer::generate::{complete_batch, SampleOptions};
use crate::models::gpt::Gpt;

/// One model's answers, as the labeler sees them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelVerdict {
    pub model: String,
    pub safe: f64,
    pub correct: f64,
    pub format: f64,
    pub within_budget: f64,
    pub mean_chars: f64,
}

/// What a comparison reports: each model's shares, and `win_rate[i][j]`, how often model i's
/// answer is preferred to model j's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Comparison {
    pub prompts: usize,
    pub models: Vec<ModelVerdict>,
    pub win_rate: Vec<Vec<f64>>,
}

/// Answers `prompts` with every checkpoint of `ckpts` and judges them; writes `compare.json` and
/// each model's `answers_<model>.jsonl` into `out`.
pub fn compare(
    ckpts: &[PathBuf],
    prompts_file: &Path,
    out: &Path,
    limit: Option<usize>,
    max_new_tokens: usize,
    device: tch::Device,
) -> Result<Comparison> {
    ensure!(ckpts.len() >= 2, "give at least two checkpoints to compare");
    let mut prompts = read(prompts_file, LabelPrompt::from_record)?;
    if let Some(n) = limit {
        ensure!(n > 0, "--limit must be positive");
        prompts.truncate(n);
    }
    let texts: Vec<String> =
        prompts.iter().map(|p| chat::generation_prompt(&[Turn::new(Role::User, p.prompt.clone())])).collect();
    let opts = SampleOptions { temperature: 0.0, max_new_tokens, ..SampleOptions::default() };
    std::fs::create_dir_all(out)?;
    let mut judged: Vec<Vec<Judgement>> = Vec::new();
    let mut models = Vec::new();
    for ckpt in ckpts {
        let loaded = checkpoint::load::<Gpt>(ckpt, device)?;
        let tok = loaded.tokenizer()?;
        let name = display_name(&loaded.dir);
        let mut answers = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(32) {
            answers.extend(complete_batch(&loaded.model, &tok, chunk, &opts)?.into_iter().map(|c| c.text));
        }
        let j: Vec<Judgement> = prompts.iter().zip(&answers).map(|(p, a)| p.judge(a)).collect();
        let records: Vec<_> = prompts
            .iter()
            .zip(&answers)
            .zip(&j)
            .map(|((p, a), j)| json!({"prompt": p.prompt, "answer": a, "expected": p.answer, "safe": j.safe, "correct": j.correct, "format": j.format}))
            .collect();
        crate::jsonl::write_jsonl(&out.join(format!("answers_{name}.jsonl")), &records)?;
        let n = j.len().max(1) as f64;
        let share = |f: fn(&Judgement) -> bool| j.iter().filter(|x| f(x)).count() as f64 / n;
        models.push(ModelVerdict {
            model: name,
            safe: share(|x| x.safe),
            correct: share(|x| x.correct),
            format: share(|x| x.format),
            within_budget: share(|x| x.within_budget),
            mean_chars: j.iter().map(|x| x.len as f64).sum::<f64>() / n,
        });
        judged.push(j);
    }
    let n = prompts.len().max(1) as f64;
    let win_rate = (0..judged.len())
        .map(|a| {
            (0..judged.len())
                .map(|b| {
                    judged[a]
                        .iter()
                        .zip(&judged[b])
                        .map(|(x, y)| match x.cmp_quality(y) {
                            std::cmp::Ordering::Greater => 1.0,
                            std::cmp::Ordering::Equal => 0.5,
                            std::cmp::Ordering::Less => 0.0,
                        })
                        .sum::<f64>()
                        / n
                })
                .collect()
        })
        .collect();
    let result = Comparison { prompts: prompts.len(), models, win_rate };
    std::fs::write(out.join("compare.json"), serde_json::to_string_pretty(&result)? + "\n")?;
    Ok(result)
}
