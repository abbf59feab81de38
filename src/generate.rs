//! Autoregressive sampling: temperature (0 = greedy), top-k, top-p, stop strings, and a KV cache
//! that turns each new token into a one-position forward pass.

use anyhow::{bail, ensure, Result};
use tch::{Kind, Tensor};

use crate::model::gpt::{Gpt, Input, KvCache};
use crate::tokenizer::Tokenizer;

#[derive(Clone, Debug)]
pub struct SampleOptions {
    /// 0 picks the most likely token (greedy).
    pub temperature: f64,
    pub top_k: Option<i64>,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: Option<f64>,
    pub max_new_tokens: usize,
    /// Generation ends before the first occurrence of any of these strings.
    pub stop: Vec<String>,
    pub seed: u64,
    pub kv_cache: bool,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            max_new_tokens: 64,
            stop: Vec::new(),
            seed: 0,
            kv_cache: true,
        }
    }
}

impl SampleOptions {
    /// Rejects settings that would make the sampling distribution empty or undefined.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.temperature.is_finite() && self.temperature >= 0.0,
            "temperature must be >= 0, got {}",
            self.temperature
        );
        if let Some(p) = self.top_p {
            ensure!(p > 0.0 && p <= 1.0, "top-p must be in (0, 1], got {p}");
        }
        if let Some(k) = self.top_k {
            ensure!(k >= 1, "top-k must be at least 1, got {k}");
        }
        Ok(())
    }
}

/// Picks the next token from logits [V] (fp32).
pub fn sample_next(logits: &Tensor, opts: &SampleOptions) -> i64 {
    if opts.temperature <= 0.0 {
        return logits.argmax(0, false).int64_value(&[]);
    }
    let mut logits = logits / opts.temperature;
    let v = logits.size()[0];
    if let Some(k) = opts.top_k.filter(|&k| k > 0 && k < v) {
        let (top, _) = logits.topk(k, 0, true, true);
        let kth = top.get(k - 1);
        logits = logits.masked_fill(&logits.lt_tensor(&kth), f64::NEG_INFINITY);
    }
    if let Some(p) = opts.top_p.filter(|&p| p < 1.0) {
        let (sorted, order) = logits.sort(0, true);
        let probs = sorted.softmax(0, Kind::Float);
        // Drop a token when the tokens before it already reach p; the first always stays.
        let drop = (probs.cumsum(0, Kind::Float) - &probs).gt(p);
        let drop = drop.zeros_like().scatter(0, &order, &drop);
        logits = logits.masked_fill(&drop, f64::NEG_INFINITY);
    }
    logits.softmax(0, Kind::Float).multinomial(1, false).int64_value(&[0])
}

/// Continues `ids` by up to `max_new_tokens`, stopping at `eot`; `vocab` limits sampling to
/// real token ids (the model's vocab may be padded). Calls `on_token` after each new token and
/// stops when it returns false. Prompts longer than the context are cut from the left.
pub fn generate_ids(
    model: &Gpt,
    ids: &[i64],
    vocab: i64,
    eot: Option<i64>,
    opts: &SampleOptions,
    mut on_token: impl FnMut(&[i64]) -> bool,
) -> Result<Vec<i64>> {
    opts.validate()?;
    ensure!(!ids.is_empty(), "generation needs at least one prompt token");
    if let Some(bad) = ids.iter().find(|&&t| t < 0 || t >= model.cfg.vocab_size) {
        bail!("prompt token id {bad} is outside the vocabulary (0..{})", model.cfg.vocab_size);
    }
    let block = model.cfg.block_size as usize;
    tch::manual_seed(opts.seed as i64);
    let device = model.device();
    let mut seq: Vec<i64> = ids.to_vec();
    let mut new = Vec::new();
    let mut cache = KvCache::new();
    tch::no_grad(|| -> Result<()> {
        while new.len() < opts.max_new_tokens {
            let window = &seq[seq.len().saturating_sub(block)..];
            // With a cache only the uncached suffix runs; a full cache slides by re-prefilling.
            let (input, cache_ref) = if opts.kv_cache {
                if cache.len() as usize + 1 > block {
                    cache = KvCache::new();
                }
                let fresh = &window[window.len() - (window.len() - cache.len() as usize).max(1)..];
                (fresh, Some(&mut cache))
            } else {
                (window, None)
            };
            let x = Tensor::from_slice(input).to_device(device).unsqueeze(0); // [1, T]
            let logits = model.forward(Input::Tokens(&x), None, cache_ref, false)?; // [1, T, V]
            let last = logits.get(0).get(-1).narrow(0, 0, vocab); // [V]
            let next = sample_next(&last, opts);
            seq.push(next);
            new.push(next);
            if Some(next) == eot || !on_token(&new) {
                break;
            }
        }
        Ok(())
    })?;
    Ok(new)
}

/// A finished completion.
pub struct Completion {
    pub text: String,
    pub tokens: Vec<i64>,
    /// Prompt tokens dropped from the left to fit the context.
    pub prompt_tokens_dropped: usize,
}

/// Completes `prompt` as text, honouring stop strings.
pub fn complete(model: &Gpt, tok: &Tokenizer, prompt: &str, opts: &SampleOptions) -> Result<Completion> {
    let mut ids: Vec<i64> = tok.encode(prompt)?.into_iter().map(i64::from).collect();
    if ids.is_empty() {
        // Training documents start after an end-of-text: the natural unconditional context.
        ids.push(tok.eot() as i64);
    }
    let block = model.cfg.block_size as usize;
    let dropped = ids.len().saturating_sub(block);
    if dropped > 0 {
        eprintln!(
            "warning: the prompt has {} tokens, more than the context of {block}; keeping the last {block}",
            ids.len()
        );
        ids.drain(..dropped);
    }
    let eot = tok.eot() as i64;
    let vocab = (tok.vocab_size() as i64).min(model.cfg.vocab_size);
    let decode = |t: &[i64]| -> Result<String> {
        let ids: Vec<u32> = t.iter().filter(|&&i| i != eot).map(|&i| i as u32).collect();
        tok.decode(&ids)
    };
    let hits_stop = |text: &str| opts.stop.iter().any(|s| !s.is_empty() && text.contains(s.as_str()));
    let tokens =
        generate_ids(model, &ids, vocab, Some(eot), opts, |new| decode(new).map(|t| !hits_stop(&t)).unwrap_or(true))?;
    let mut text = decode(&tokens)?;
    if let Some(cut) = opts.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min() {
        text.truncate(cut);
    }
    Ok(Completion { text, tokens, prompt_tokens_dropped: dropped })
}
