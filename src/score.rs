//! Log-likelihood scoring: the one primitive that few-shot evaluation, perplexity and reward
//! models build on. `token_logprobs[i]` is log P(token i+1 | tokens 0..=i).

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use tch::{Kind, Tensor};

use crate::model::gpt::{Gpt, Input};
use crate::tokenizer::Tokenizer;

#[derive(Debug, Serialize)]
pub struct Scored {
    pub total_logprob: f64,
    pub token_logprobs: Vec<f64>,
}

/// log P(tokens[i+1] | tokens[..=i]) for i in 0..n-1, one forward pass (n <= context).
fn window_logprobs(model: &Gpt, tokens: &[i64]) -> Result<Vec<f64>> {
    let x = Tensor::from_slice(tokens).to_device(model.device()).unsqueeze(0); // [1, T]
    let logits = tch::no_grad(|| model.forward(Input::Tokens(&x), None, None, false))?; // [1, T, V]
    let n = tokens.len() as i64;
    let logp = logits.get(0).narrow(0, 0, n - 1).log_softmax(-1, Kind::Float); // [T-1, V]
    let targets = x.get(0).narrow(0, 1, n - 1).unsqueeze(1); // [T-1, 1]
    let picked = logp.gather(1, &targets, false).squeeze_dim(1).to_kind(Kind::Double); // [T-1]
    Ok(Vec::<f64>::try_from(&picked)?)
}

/// Scores one token sequence of at least one token. Sequences longer than the context are
/// scored in overlapping windows (lm-eval's rolling log-likelihood): after the first window,
/// each step scores the next half-context of tokens with a full-context window that ends at the
/// last of them, so every token after the first window sees at least half a context.
pub fn score_tokens(model: &Gpt, tokens: &[i64]) -> Result<Scored> {
    ensure!(!tokens.is_empty(), "nothing to score: the sequence is empty");
    if let Some(bad) = tokens.iter().find(|&&t| t < 0 || t >= model.cfg.vocab_size) {
        bail!("token id {bad} is outside the vocabulary (0..{})", model.cfg.vocab_size);
    }
    let (n, block) = (tokens.len(), model.cfg.block_size as usize);
    if n == 1 {
        return Ok(Scored { total_logprob: 0.0, token_logprobs: Vec::new() });
    }
    let mut token_logprobs = window_logprobs(model, &tokens[..n.min(block)])?;
    let stride = (block / 2).max(1);
    let mut next = block; // index of the next token to predict
    while next < n {
        let end = (next + stride).min(n);
        let window = window_logprobs(model, &tokens[end - block..end])?; // predicts tokens end-block+1..end
        token_logprobs.extend_from_slice(&window[window.len() - (end - next)..]);
        next = end;
    }
    Ok(Scored { total_logprob: token_logprobs.iter().sum(), token_logprobs })
}

/// A JSON array of token ids, as input files give them (`{"tokens": [...]}`).
pub fn token_ids(ids: &[serde_json::Value]) -> Result<Vec<i64>> {
    ids.iter().map(|v| v.as_i64().context("token ids must be integers")).collect()
}

/// Scores every line of a JSONL file: `{"text": ...}` or `{"tokens": [ids]}`.
pub fn score_file(model: &Gpt, tok: &Tokenizer, input: &Path) -> Result<Vec<Scored>> {
    let records = crate::metrics::read_jsonl(input)?;
    let mut out = Vec::with_capacity(records.len());
    for (i, rec) in records.iter().enumerate() {
        let at = || format!("{}: record {}", input.display(), i + 1);
        let tokens: Vec<i64> = if let Some(text) = rec.get("text").and_then(|t| t.as_str()) {
            tok.encode(text)?.into_iter().map(i64::from).collect()
        } else if let Some(ids) = rec.get("tokens").and_then(|t| t.as_array()) {
            token_ids(ids).with_context(at)?
        } else {
            bail!("{}: expected an object with \"text\" (string) or \"tokens\" (array of ids)", at());
        };
        out.push(score_tokens(model, &tokens).with_context(at)?);
    }
    Ok(out)
}
