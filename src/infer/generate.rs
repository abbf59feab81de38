//! Autoregressive sampling: temperature (0 = greedy), top-k, top-p, stop strings, and a KV cache
//! that turns each new token into a one-position forward pass ([`Gpt::decode_step`], fused on
//! the CPU). Several prompts run as one batch: left-padded to a common length, one attention
//! mask and one cache (prompts of one length need neither padding nor mask), each row stopping
//! on its own; greedy rows produce exactly what they would alone.

use anyhow::{bail, ensure, Result};
use tch::{Kind, Tensor};

use crate::models::gpt::{Gpt, Input, KvCache, Pass};
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
    let mut out = generate_batch(model, &[ids.to_vec()], vocab, eot, opts, |_, new| on_token(new))?;
    Ok(out.remove(0))
}

/// Continues every prompt of `prompts` at once (see [`generate_ids`]); `on_token(row, new)`
/// decides, after each new token of a row, whether that row goes on.
pub fn generate_batch(
    model: &Gpt,
    prompts: &[Vec<i64>],
    vocab: i64,
    eot: Option<i64>,
    opts: &SampleOptions,
    on_token: impl FnMut(usize, &[i64]) -> bool,
) -> Result<Vec<Vec<i64>>> {
    generate_batch_with(model, prompts, vocab, eot, opts, on_token, None)
}

/// Turns a left-padded batch of ids [B, T] into the decoder's input embeddings [B, T, C]: how
/// the multimodal model puts its image tokens in place.
pub type EmbedFn<'a> = &'a dyn Fn(&Tensor) -> Result<Tensor>;

/// [`generate_batch`], where every full read of the sequences (the prefill, and each step
/// without a cache) goes through `embed` when given. Such prompts are never cut to the context
/// (that would cut an image): prompt and new tokens must fit it.
pub fn generate_batch_with(
    model: &Gpt,
    prompts: &[Vec<i64>],
    vocab: i64,
    eot: Option<i64>,
    opts: &SampleOptions,
    mut on_token: impl FnMut(usize, &[i64]) -> bool,
    embed: Option<EmbedFn>,
) -> Result<Vec<Vec<i64>>> {
    opts.validate()?;
    let block = model.cfg.block_size as usize;
    for ids in prompts {
        ensure!(!ids.is_empty(), "generation needs at least one prompt token");
        if let Some(bad) = ids.iter().find(|&&t| t < 0 || t >= model.cfg.vocab_size) {
            bail!("prompt token id {bad} is outside the vocabulary (0..{})", model.cfg.vocab_size);
        }
        if embed.is_some() && ids.len() + opts.max_new_tokens > block {
            bail!(
                "{} prompt tokens (images included) and {} new ones exceed the context of {block}",
                ids.len(),
                opts.max_new_tokens
            );
        }
    }
    tch::manual_seed(opts.seed as i64);
    let device = model.device();
    let rows = prompts.len();
    // Prompts of one length need no padding, hence no mask: each row attends to its own
    // positions only, and a finished row's further steps are computed and ignored.
    let masked = prompts.iter().any(|p| p.len() != prompts[0].len());
    let mut seqs: Vec<Vec<i64>> = prompts.to_vec();
    let mut new: Vec<Vec<i64>> = vec![Vec::new(); rows];
    let mut live = vec![true; rows];
    // The cache never holds more than the longest prompt (cut to the context) and its new tokens.
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let capacity = (longest + opts.max_new_tokens).min(block) as i64;
    let mut cache = KvCache::with_capacity(capacity);
    // The mask of everything the cache holds, [B, cached]; padding and finished rows' steps are 0.
    let mut mask = Tensor::zeros([rows as i64, 0], (Kind::Int64, device));
    tch::no_grad(|| -> Result<()> {
        for _ in 0..opts.max_new_tokens {
            if !live.iter().any(|&l| l) {
                break;
            }
            // The cache holds everything but each row's last sampled token, so a step feeds one
            // column; a fresh start, a cache that would outgrow the context, or no cache at all
            // re-reads each row's last `block` tokens (left-padded to the longest).
            let step = opts.kv_cache && !cache.is_empty() && cache.len() < block as i64;
            let logits = if step && !masked {
                let col: Vec<i64> = seqs.iter().map(|s| s[s.len() - 1]).collect();
                model.decode_step(&col, &mut cache)? // [B, V]
            } else if step {
                let col: Vec<i64> = seqs.iter().zip(&live).map(|(s, &l)| if l { s[s.len() - 1] } else { 0 }).collect();
                let live_col: Vec<i64> = live.iter().map(|&l| l as i64).collect();
                let x = Tensor::from_slice(&col).to_device(device).unsqueeze(1); // [B, 1]
                let m = Tensor::cat(&[&mask, &Tensor::from_slice(&live_col).to_device(device).unsqueeze(1)], 1);
                let logits = model.forward(
                    Input::Tokens(&x),
                    Pass { mask: Some(&m), cache: Some(&mut cache), ..Default::default() },
                )?;
                mask = m;
                logits.select(1, -1) // [B, V]
            } else {
                let windows: Vec<&[i64]> = seqs.iter().map(|s| &s[s.len().saturating_sub(block)..]).collect();
                let width = windows.iter().map(|w| w.len()).max().unwrap_or(0);
                let mut ids = Vec::with_capacity(rows * width);
                let mut real = Vec::with_capacity(rows * width);
                for w in &windows {
                    ids.extend(std::iter::repeat_n(0, width - w.len()).chain(w.iter().copied()));
                    real.extend(std::iter::repeat_n(0i64, width - w.len()).chain(std::iter::repeat_n(1, w.len())));
                }
                let x = Tensor::from_slice(&ids).to_device(device).view([rows as i64, width as i64]); // [B, T]
                let m = Tensor::from_slice(&real).to_device(device).view([rows as i64, width as i64]); // [B, T]
                cache = KvCache::with_capacity(capacity);
                let cache_ref = opts.kv_cache.then_some(&mut cache);
                let pass = Pass { mask: masked.then_some(&m), cache: cache_ref, ..Default::default() };
                let logits = match embed {
                    Some(embed) => model.forward(Input::Embeddings(&embed(&x)?), pass)?,
                    None => model.forward(Input::Tokens(&x), pass)?,
                };
                mask = m;
                logits.select(1, -1) // [B, V]
            };
            let last = logits.narrow(1, 0, vocab); // [B, V]

            // Greedy rows need one argmax and one transfer for the whole batch.
            let greedy: Option<Vec<i64>> =
                (opts.temperature <= 0.0).then(|| Vec::<i64>::try_from(&last.argmax(1, false))).transpose()?;
            for row in 0..rows {
                if !live[row] {
                    continue;
                }
                let next = match &greedy {
                    Some(ids) => ids[row],
                    None => sample_next(&last.get(row as i64), opts),
                };
                seqs[row].push(next);
                new[row].push(next);
                if Some(next) == eot || !on_token(row, &new[row]) {
                    live[row] = false;
                }
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
    let mut out = complete_batch(model, tok, &[prompt.to_string()], opts)?;
    Ok(out.remove(0))
}

/// Completes every prompt in one batch (see [`generate_batch`]), honouring stop strings per row.
pub fn complete_batch(
    model: &Gpt,
    tok: &Tokenizer,
    prompts: &[String],
    opts: &SampleOptions,
) -> Result<Vec<Completion>> {
    let block = model.cfg.block_size as usize;
    let mut dropped = Vec::with_capacity(prompts.len());
    let mut ids = Vec::with_capacity(prompts.len());
    for prompt in prompts {
        let mut row: Vec<i64> = tok.encode(prompt)?.into_iter().map(i64::from).collect();
        if row.is_empty() {
            // Training documents start after an end-of-text: the natural unconditional context.
            row.push(tok.eot() as i64);
        }
        let cut = row.len().saturating_sub(block);
        if cut > 0 {
            eprintln!(
                "warning: the prompt has {} tokens, more than the context of {block}; keeping the last {block}",
                row.len()
            );
            row.drain(..cut);
        }
        dropped.push(cut);
        ids.push(row);
    }
    let eot = tok.eot() as i64;
    let vocab = (tok.vocab_size() as i64).min(model.cfg.vocab_size);
    let decode = |t: &[i64]| -> Result<String> {
        let ids: Vec<u32> = t.iter().filter(|&&i| i != eot).map(|&i| i as u32).collect();
        tok.decode(&ids)
    };
    let hits_stop = |text: &str| opts.stop.iter().any(|s| !s.is_empty() && text.contains(s.as_str()));
    let tokens = generate_batch(model, &ids, vocab, Some(eot), opts, |_, new| {
        decode(new).map(|t| !hits_stop(&t)).unwrap_or(true)
    })?;
    tokens
        .into_iter()
        .zip(dropped)
        .map(|(tokens, prompt_tokens_dropped)| {
            let mut text = decode(&tokens)?;
            if let Some(cut) = opts.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min() {
                text.truncate(cut);
            }
            Ok(Completion { text, tokens, prompt_tokens_dropped })
        })
        .collect()
}
