//! `gptlab rlhf label`: comparison data as InstructGPT collected it. A model samples K responses
//! to each prompt and the labeler ranks them, so the reward model learns to judge the outputs of
//! the policy it will score rather than only hand-written candidates (a reward model that has
//! never seen the policy's own mistakes is easy for PPO to exploit).
//!
//! Responses the labeler cannot tell apart (two equally wrong answers) are collapsed to one, so
//! every pair a ranking yields carries a real preference; a prompt whose samples all fare the
//! same is skipped.

use std::path::Path;

use anyhow::{ensure, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::data::read;
use super::labeler::LabelPrompt;
use crate::chat::{self, Role, Turn};
use crate::checkpoint;
use crate::infer::generate::{complete_batch, SampleOptions};
use crate::models::gpt::Gpt;

/// How many responses to sample per prompt and how.
#[derive(Clone, Debug)]
pub struct LabelOptions {
    /// Responses per prompt are drawn uniformly from `k_min..=k_max` (InstructGPT: 4..9).
    pub k_min: usize,
    pub k_max: usize,
    pub temperature: f64,
    pub max_new_tokens: usize,
    pub seed: u64,
    /// Label only the first N prompts.
    pub limit: Option<usize>,
}

/// What `label` wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelSummary {
    /// Prompts written as K-wise rankings.
    pub ranked: usize,
    /// Prompts whose samples the labeler could not tell apart.
    pub skipped: usize,
    /// Mean responses per written ranking, after collapsing ties.
    pub mean_k: f64,
}

/// Rows generated per forward batch.
const CHUNK: usize = 32;

/// Samples responses from `ckpt` to the prompts of `prompts_file`, ranks them with the labeler
/// and writes `{"prompt", "responses", "ranking"}` records to `out`.
pub fn label(
    ckpt: &Path,
    prompts_file: &Path,
    out: &Path,
    opts: &LabelOptions,
    device: tch::Device,
) -> Result<LabelSummary> {
    ensure!(
        opts.k_min >= 2 && opts.k_min <= opts.k_max,
        "responses per prompt: need 2 <= --k-min <= --k-max, got {}..{}",
        opts.k_min,
        opts.k_max
    );
    ensure!(
        opts.temperature > 0.0 && opts.temperature.is_finite(),
        "--temperature must be positive (labeling samples)"
    );
    ensure!(opts.max_new_tokens > 0, "--max-new-tokens must be positive");
    let mut prompts = read(prompts_file, LabelPrompt::from_record)?;
    if let Some(n) = opts.limit {
        ensure!(n > 0, "--limit must be positive");
        prompts.truncate(n);
    }
    let loaded = checkpoint::load::<Gpt>(ckpt, device)?;
    let tok = loaded.tokenizer()?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let ks: Vec<usize> = prompts.iter().map(|_| rng.random_range(opts.k_min..=opts.k_max)).collect();
    // One row per sample: prompt i repeated ks[i] times.
    let rows: Vec<(usize, String)> = prompts
        .iter()
        .zip(&ks)
        .enumerate()
        .flat_map(|(i, (p, &k))| {
            std::iter::repeat_n((i, chat::generation_prompt(&[Turn::new(Role::User, p.prompt.clone())])), k)
        })
        .collect();
    let bar = ProgressBar::new(rows.len() as u64).with_message("sampling");
    bar.set_style(ProgressStyle::with_template(
        "{msg} {bar:30} {pos}/{len} responses [{elapsed_precise}<{eta_precise}]",
    )?);
    let mut samples: Vec<Vec<String>> = vec![Vec::new(); prompts.len()];
    for (c, chunk) in rows.chunks(CHUNK).enumerate() {
        let texts: Vec<String> = chunk.iter().map(|(_, t)| t.clone()).collect();
        let sample = SampleOptions {
            temperature: opts.temperature,
            max_new_tokens: opts.max_new_tokens,
            seed: opts.seed.wrapping_add(c as u64),
            ..SampleOptions::default()
        };
        for ((i, _), done) in chunk.iter().zip(complete_batch(&loaded.model, &tok, &texts, &sample)?) {
            samples[*i].push(done.text.trim().to_string());
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let mut records = Vec::new();
    let mut kept = 0;
    for (p, responses) in prompts.iter().zip(samples) {
        if let Some((responses, ranking)) = distinct_ranking(p, responses) {
            kept += responses.len();
            records.push(json!({"prompt": p.prompt, "responses": responses, "ranking": ranking}));
        }
    }
    ensure!(!records.is_empty(), "the labeler could not tell any prompt's samples apart: no ranking to write");
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    crate::jsonl::write_jsonl(out, &records)?;
    Ok(LabelSummary {
        ranked: records.len(),
        skipped: prompts.len() - records.len(),
        mean_k: kept as f64 / records.len() as f64,
    })
}

/// The samples worth ranking: non-empty and distinct, one per quality the labeler tells apart,
/// with their ranking (indices, best first); None when fewer than two remain.
fn distinct_ranking(p: &LabelPrompt, mut responses: Vec<String>) -> Option<(Vec<String>, Vec<usize>)> {
    let mut seen = std::collections::HashSet::new();
    responses.retain(|r| !r.is_empty() && seen.insert(r.clone()));
    let order = p.rank(&responses);
    let judged: Vec<_> = responses.iter().map(|r| p.judge(r)).collect();
    let mut best_of_class: Vec<usize> = Vec::new();
    for &i in &order {
        if best_of_class.last().is_none_or(|&j| judged[j].cmp_quality(&judged[i]).is_ne()) {
            best_of_class.push(i);
        }
    }
    if best_of_class.len() < 2 {
        return None;
    }
    // The kept responses in sample order, each with its place in the ranking.
    let mut by_sample: Vec<(usize, usize)> = best_of_class.iter().enumerate().map(|(place, &i)| (i, place)).collect();
    by_sample.sort_unstable();
    let kept: Vec<String> = by_sample.iter().map(|&(i, _)| responses[i].clone()).collect();
    let mut ranking = vec![0; by_sample.len()];
    for (position, &(_, place)) in by_sample.iter().enumerate() {
        ranking[place] = position;
    }
    Some((kept, ranking))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(answer: &str) -> LabelPrompt {
        LabelPrompt { prompt: "What is 2 plus 2?".into(), answer: answer.into(), unsafe_request: false }
    }

    #[test]
    fn ties_collapse_to_one_response_and_the_ranking_indexes_what_is_kept() {
        let p = prompt("4");
        // Two equally wrong answers, an empty one, a duplicate, the verbose right one and the bare one.
        let responses = ["5", "7", "", "The answer is 4.", "4", "5"].map(String::from).to_vec();
        let (kept, ranking) = distinct_ranking(&p, responses).unwrap();
        assert_eq!(kept, vec!["5", "The answer is 4.", "4"]);
        assert_eq!(ranking, vec![2, 1, 0]);
    }

    #[test]
    fn samples_the_labeler_cannot_tell_apart_are_skipped() {
        let p = prompt("4");
        assert_eq!(distinct_ranking(&p, ["5", "6", "7"].map(String::from).to_vec()), None);
        assert_eq!(distinct_ranking(&p, ["4", "4"].map(String::from).to_vec()), None);
    }
}
