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

/// Scores one token sequence (at least one token, at most the context).
pub fn score_tokens(model: &Gpt, tokens: &[i64]) -> Result<Scored> {
    ensure!(!tokens.is_empty(), "nothing to score: the sequence is empty");
    let block = model.cfg.block_size as usize;
    ensure!(tokens.len() <= block, "sequence of {} tokens exceeds the model's context of {block}", tokens.len());
    if let Some(bad) = tokens.iter().find(|&&t| t < 0 || t >= model.cfg.vocab_size) {
        bail!("token id {bad} is outside the vocabulary (0..{})", model.cfg.vocab_size);
    }
    let x = Tensor::from_slice(tokens).to_device(model.device()).unsqueeze(0); // [1, T]
    let logits = tch::no_grad(|| model.forward(Input::Tokens(&x), None, None, false))?; // [1, T, V]
    let n = tokens.len() as i64;
    let logp = logits.get(0).narrow(0, 0, n - 1).log_softmax(-1, Kind::Float); // [T-1, V]
    let targets = x.get(0).narrow(0, 1, n - 1).unsqueeze(1); // [T-1, 1]
    let picked = logp.gather(1, &targets, false).squeeze_dim(1).to_kind(Kind::Double); // [T-1]
    let token_logprobs: Vec<f64> = Vec::<f64>::try_from(&picked)?;
    Ok(Scored { total_logprob: token_logprobs.iter().sum(), token_logprobs })
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
            ids.iter()
                .map(|v| v.as_i64().with_context(|| format!("{}: token ids must be integers", at())))
                .collect::<Result<_>>()?
        } else {
            bail!("{}: expected an object with \"text\" (string) or \"tokens\" (array of ids)", at());
        };
        out.push(score_tokens(model, &tokens).with_context(at)?);
    }
    Ok(out)
}
