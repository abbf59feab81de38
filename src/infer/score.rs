//! Log-likelihood scoring: the one primitive that few-shot evaluation, perplexity and reward
//! models build on. `token_logprobs[i]` is log P(token i+1 | tokens 0..=i).

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use tch::{Kind, Tensor};

use crate::models::gpt::{Gpt, Input, Pass};
use crate::tokenizer::Tokenizer;

#[derive(Debug, Serialize)]
pub struct Scored {
    pub total_logprob: f64,
    pub token_logprobs: Vec<f64>,
}

/// log P(targets[b, t] | inputs[b, ..=t]) [B, T] (fp64) and whether each target is the most likely
/// token [B, T], from the logits [B, T, V] of the inputs: what every likelihood score reads.
pub fn next_token_scores(logits: &Tensor, targets: &Tensor) -> (Tensor, Tensor) {
    let logp = logits.log_softmax(-1, Kind::Float); // [B, T, V]
    let picked = logp.gather(2, &targets.unsqueeze(2), false).squeeze_dim(2).to_kind(Kind::Double); // [B, T]
    let greedy = logits.argmax(-1, false).eq_tensor(targets); // [B, T]
    (picked, greedy)
}

/// log P(row[i+1] | row[..=i]) of every row (each of 2..=context tokens), in one forward pass.
/// Rows are right-padded to the longest: a causal model's real positions never see the padding
/// after them, so each row scores as it would alone.
fn rows_logprobs(model: &Gpt, rows: &[&[i64]]) -> Result<Vec<Vec<f64>>> {
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let ids: Vec<i64> =
        rows.iter().flat_map(|r| r.iter().copied().chain(std::iter::repeat_n(0, width - r.len()))).collect();
    let x = Tensor::from_slice(&ids).to_device(model.device()).view([rows.len() as i64, width as i64]); // [B, T]
    let logits = tch::no_grad(|| model.forward(Input::Tokens(&x), Pass::default()))?; // [B, T, V]
    let (picked, _) = next_token_scores(&logits.narrow(1, 0, width as i64 - 1), &x.narrow(1, 1, width as i64 - 1)); // [B, T-1]
    let all = Vec::<f64>::try_from(&picked.reshape([-1]))?;
    Ok(rows.iter().enumerate().map(|(i, r)| all[i * (width - 1)..i * (width - 1) + r.len() - 1].to_vec()).collect())
}

fn check_ids(model: &Gpt, tokens: &[i64]) -> Result<()> {
    ensure!(!tokens.is_empty(), "nothing to score: the sequence is empty");
    if let Some(bad) = tokens.iter().find(|&&t| t < 0 || t >= model.cfg.vocab_size) {
        bail!("token id {bad} is outside the vocabulary (0..{})", model.cfg.vocab_size);
    }
    Ok(())
}

fn scored(token_logprobs: Vec<f64>) -> Scored {
    Scored { total_logprob: token_logprobs.iter().sum(), token_logprobs }
}

/// Scores one token sequence of at least one token. Sequences longer than the context are
/// scored in overlapping windows (lm-eval's rolling log-likelihood): after the first window,
/// each step scores the next half-context of tokens with a full-context window that ends at the
/// last of them, so every token after the first window sees at least half a context.
pub fn score_tokens(model: &Gpt, tokens: &[i64]) -> Result<Scored> {
    check_ids(model, tokens)?;
    rolling(model, tokens)
}

/// [`score_tokens`] of ids already checked.
fn rolling(model: &Gpt, tokens: &[i64]) -> Result<Scored> {
    let (n, block) = (tokens.len(), model.cfg.block_size as usize);
    if n == 1 {
        return Ok(scored(Vec::new()));
    }
    let mut token_logprobs = rows_logprobs(model, &[&tokens[..n.min(block)]])?.remove(0);
    let stride = (block / 2).max(1);
    let mut next = block; // index of the next token to predict
    while next < n {
        let end = (next + stride).min(n);
        let window = rows_logprobs(model, &[&tokens[end - block..end]])?.remove(0); // predicts tokens end-block+1..end
        token_logprobs.extend_from_slice(&window[window.len() - (end - next)..]);
        next = end;
    }
    Ok(scored(token_logprobs))
}

/// Scores several sequences, up to `batch_size` of those that fit the context per forward pass;
/// longer ones go through [`score_tokens`]'s rolling windows one by one. Equals scoring each
/// alone (to float tolerance).
pub fn score_batch(model: &Gpt, seqs: &[Vec<i64>], batch_size: usize) -> Result<Vec<Scored>> {
    for (i, s) in seqs.iter().enumerate() {
        check_ids(model, s).with_context(|| format!("sequence {}", i + 1))?;
    }
    batched(model, seqs, batch_size)
}

/// [`score_batch`] of ids already checked.
fn batched(model: &Gpt, seqs: &[Vec<i64>], batch_size: usize) -> Result<Vec<Scored>> {
    ensure!(batch_size > 0, "the batch size must be at least 1");
    let block = model.cfg.block_size as usize;
    let mut out: Vec<Option<Scored>> = seqs.iter().map(|_| None).collect();
    let short: Vec<usize> = (0..seqs.len()).filter(|&i| (2..=block).contains(&seqs[i].len())).collect();
    for chunk in short.chunks(batch_size) {
        let rows: Vec<&[i64]> = chunk.iter().map(|&i| seqs[i].as_slice()).collect();
        for (&i, lp) in chunk.iter().zip(rows_logprobs(model, &rows)?) {
            out[i] = Some(scored(lp));
        }
    }
    seqs.iter()
        .zip(out)
        .map(|(s, done)| match done {
            Some(d) => Ok(d),
            None => rolling(model, s),
        })
        .collect()
}

/// A JSON array of token ids, as input files give them (`{"tokens": [...]}`).
pub fn token_ids(ids: &[serde_json::Value]) -> Result<Vec<i64>> {
    ids.iter().map(|v| v.as_i64().context("token ids must be integers")).collect()
}

/// Scores every line of a JSONL file, `{"text": ...}` or `{"tokens": [ids]}`, `batch_size` lines
/// a pass. Text needs the tokenizer; token ids do not (an imported HF model may have none).
pub fn score_file(model: &Gpt, tok: Option<&Tokenizer>, input: &Path, batch_size: usize) -> Result<Vec<Scored>> {
    let records = crate::jsonl::read_jsonl(input)?;
    let mut seqs = Vec::with_capacity(records.len());
    for (i, rec) in records.iter().enumerate() {
        let at = || format!("{}: record {}", input.display(), i + 1);
        anyhow::ensure!(
            !(rec.get("text").is_some() && rec.get("tokens").is_some()),
            "{}: has both \"text\" and \"tokens\"; give one",
            at()
        );
        let tokens: Vec<i64> = if let Some(text) = rec.get("text").and_then(|t| t.as_str()) {
            let tok = tok.with_context(|| {
                format!(
                    "{}: text needs the checkpoint's tokenizer.json, which it lacks; give {{\"tokens\": [...]}}",
                    at()
                )
            })?;
            tok.encode(text)?.into_iter().map(i64::from).collect()
        } else if let Some(ids) = rec.get("tokens").and_then(|t| t.as_array()) {
            token_ids(ids).with_context(at)?
        } else {
            bail!("{}: expected an object with \"text\" (string) or \"tokens\" (array of ids)", at());
        };
        check_ids(model, &tokens).with_context(at)?;
        seqs.push(tokens);
    }
    batched(model, &seqs, batch_size)
}
