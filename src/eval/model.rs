//! The one scoring path of the harness: a GPT, a multimodal GPT or an imported HF GPT-2 behind
//! the same two requests, lm-eval's log-likelihood of a continuation and greedy generation until
//! a stop string. Requests run in batches sorted by length (longest first, as lm-eval sorts them)
//! and come back in the order given, so results do not depend on the batch size.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use indicatif::ProgressBar;
use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::checkpoint;
use crate::infer::generate::{generate_batch_with, SampleOptions};
use crate::infer::score::next_token_scores;
use crate::models::gpt::{Gpt, Input, Pass};
use crate::models::vlm::{expand_placeholders, Images, Vlm};
use crate::tokenizer::Tokenizer;
use crate::vlm::data::load_pixels;

/// The log-likelihood of `continuation` after `context`: lm-eval's `loglikelihood` request.
#[derive(Clone, Debug)]
pub struct LlRequest {
    pub context: Vec<i64>,
    pub continuation: Vec<i64>,
    /// One per `<image>` id in the context, in order (multimodal models only).
    pub images: Vec<PathBuf>,
}

/// Greedy decoding of `context` until a stop string, at most `max_new` tokens.
#[derive(Clone, Debug)]
pub struct GenRequest {
    pub context: Vec<i64>,
    pub images: Vec<PathBuf>,
    pub until: Vec<String>,
    pub max_new: usize,
}

enum Lm {
    Gpt(Gpt),
    Vlm(Box<Vlm>),
}

/// A checkpoint loaded for evaluation, with its tokenizer.
pub struct EvalModel {
    /// The name results are filed under: the checkpoint directory's name.
    pub name: String,
    pub dir: PathBuf,
    pub tok: Tokenizer,
    lm: Lm,
    _vs: VarStore,
}

impl EvalModel {
    /// Loads a GPT or VLM checkpoint; any other family is a one-line error.
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let family = checkpoint::family(dir)?;
        let name = display_name(dir);
        let (lm, vs, tok, dir) = match family.as_str() {
            "gpt" | "gpt-finetuned" | "gpt-reward" | "gpt-ppo" => {
                let l = checkpoint::load::<Gpt>(dir, device)?;
                let tok = l.tokenizer()?;
                (Lm::Gpt(l.model), l.vs, tok, l.dir)
            }
            "vlm" => {
                let l = checkpoint::load::<Vlm>(dir, device)?;
                let tok = l.tokenizer()?;
                (Lm::Vlm(Box::new(l.model)), l.vs, tok, l.dir)
            }
            other => {
                bail!("{}: a {other} checkpoint cannot be evaluated on text tasks; give a GPT or VLM", dir.display())
            }
        };
        Ok(EvalModel { name, dir, tok, lm, _vs: vs })
    }

    /// The decoder every request runs through.
    pub fn decoder(&self) -> &Gpt {
        match &self.lm {
            Lm::Gpt(g) => g,
            Lm::Vlm(v) => &v.language_model,
        }
    }

    /// The context length, in positions (an image takes [`Self::tokens_per_image`]).
    pub fn block_size(&self) -> usize {
        self.decoder().cfg.block_size as usize
    }

    pub fn is_multimodal(&self) -> bool {
        matches!(self.lm, Lm::Vlm(_))
    }

    /// Positions one `<image>` placeholder expands to; 0 for a text-only model.
    pub fn tokens_per_image(&self) -> usize {
        match &self.lm {
            Lm::Gpt(_) => 0,
            Lm::Vlm(v) => v.cfg.tokens_per_image() as usize,
        }
    }

    pub fn eot(&self) -> i64 {
        self.tok.eot() as i64
    }

    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        Ok(self.tok.encode(text)?.into_iter().map(i64::from).collect())
    }

    /// Positions `ids` take in the decoder, images expanded.
    pub fn positions(&self, ids: &[i64]) -> usize {
        match &self.lm {
            Lm::Gpt(_) => ids.len(),
            Lm::Vlm(v) => {
                ids.len() + ids.iter().filter(|&&t| t == v.cfg.image_token_id).count() * (self.tokens_per_image() - 1)
            }
        }
    }

    /// The decoder's input for rows of ids (placeholders expanded) and the rows' images.
    fn rows(&self, ids: &[&[i64]], images: &[&[PathBuf]]) -> Result<(Vec<Vec<i64>>, Option<Tensor>)> {
        match &self.lm {
            Lm::Gpt(_) => {
                ensure!(images.iter().all(|i| i.is_empty()), "a text-only GPT cannot read images");
                Ok((ids.iter().map(|r| r.to_vec()).collect(), None))
            }
            Lm::Vlm(v) => {
                let n = self.tokens_per_image();
                let rows = ids.iter().map(|r| expand_placeholders(r, v.cfg.image_token_id, n)).collect();
                let paths: Vec<PathBuf> = images.iter().flat_map(|i| i.iter().cloned()).collect();
                let table = load_pixels(&paths, &v.cfg)?;
                Ok((rows, table.gather(&(0..paths.len()).collect::<Vec<_>>(), v.device())))
            }
        }
    }

    /// Logits [B, T, V] of right-padded rows [B, T].
    fn logits(&self, x: &Tensor, pixels: Option<&Tensor>) -> Result<Tensor> {
        tch::no_grad(|| match &self.lm {
            Lm::Gpt(g) => g.forward(Input::Tokens(x), Pass::default()),
            Lm::Vlm(v) => v.forward(x, pixels.map(Images::Pixels), Pass::default()),
        })
    }

    /// lm-eval's `_loglikelihood_tokens`: for each request, the summed log-probability of the
    /// continuation and whether greedy decoding would produce it. The input is the last
    /// `block + 1` tokens of context + continuation, less the last one.
    pub fn loglikelihood(&self, reqs: &[LlRequest], batch_size: usize, bar: &ProgressBar) -> Result<Vec<(f64, bool)>> {
        ensure!(batch_size > 0, "the batch size must be at least 1");
        let block = self.block_size();
        let mut inputs = Vec::with_capacity(reqs.len());
        for (i, r) in reqs.iter().enumerate() {
            ensure!(!r.continuation.is_empty(), "request {}: the continuation is empty", i + 1);
            let whole: Vec<i64> = r.context.iter().chain(&r.continuation).copied().collect();
            let keep = &whole[whole.len().saturating_sub(block + 1)..];
            let input = &keep[..keep.len() - 1];
            ensure!(
                !self.is_multimodal() || (keep.len() == whole.len() && self.positions(&whole) <= block + 1),
                "request {}: {} positions with images exceed the context of {block}",
                i + 1,
                self.positions(&whole)
            );
            inputs.push((input.to_vec(), keep[1..].to_vec()));
        }
        let mut order: Vec<usize> = (0..reqs.len()).collect();
        order.sort_by(|&a, &b| {
            let (la, lb) = (self.positions(&inputs[a].0), self.positions(&inputs[b].0));
            lb.cmp(&la).then_with(|| inputs[a].0.cmp(&inputs[b].0))
        });
        let mut out = vec![(0.0, false); reqs.len()];
        for chunk in order.chunks(batch_size) {
            let ids: Vec<&[i64]> = chunk.iter().map(|&i| inputs[i].0.as_slice()).collect();
            let imgs: Vec<&[PathBuf]> = chunk.iter().map(|&i| reqs[i].images.as_slice()).collect();
            let (rows, pixels) = self.rows(&ids, &imgs)?;
            // Targets: each input position's next token; image positions never score.
            let targets: Vec<Vec<i64>> = chunk
                .iter()
                .zip(&rows)
                .map(|(&i, row)| {
                    let t = &inputs[i].1;
                    let mut full = vec![0; row.len() - t.len()];
                    full.extend_from_slice(t);
                    full
                })
                .collect();
            let width = rows.iter().map(Vec::len).max().unwrap_or(0);
            let pad = |r: &[i64]| r.iter().copied().chain(std::iter::repeat_n(0, width - r.len())).collect::<Vec<_>>();
            let b = chunk.len() as i64;
            let device = self.decoder().device();
            let x = Tensor::from_slice(&rows.iter().flat_map(|r| pad(r)).collect::<Vec<_>>())
                .to_device(device)
                .view([b, width as i64]); // [B, T]
            let y = Tensor::from_slice(&targets.iter().flat_map(|r| pad(r)).collect::<Vec<_>>())
                .to_device(device)
                .view([b, width as i64]); // [B, T]
            let (logp, greedy) = next_token_scores(&self.logits(&x, pixels.as_ref())?, &y); // [B, T]
            let logp = Vec::<f64>::try_from(&logp.reshape([-1]))?;
            let greedy = Vec::<bool>::try_from(&greedy.reshape([-1]))?;
            for (row, &i) in chunk.iter().enumerate() {
                let (len, n) = (rows[row].len(), reqs[i].continuation.len());
                let span = row * width + len - n..row * width + len;
                out[i] = (logp[span.clone()].iter().sum(), greedy[span].iter().all(|&g| g));
            }
            bar.inc(chunk.len() as u64);
        }
        Ok(out)
    }

    /// Greedy continuations, each cut before the first of its stop strings (lm-eval's
    /// `generate_until`); generation also ends at end-of-text.
    pub fn generate(&self, reqs: &[GenRequest], batch_size: usize, bar: &ProgressBar) -> Result<Vec<String>> {
        ensure!(batch_size > 0, "the batch size must be at least 1");
        let mut order: Vec<usize> = (0..reqs.len()).collect();
        order.sort_by(|&a, &b| {
            let (la, lb) = (self.positions(&reqs[a].context), self.positions(&reqs[b].context));
            lb.cmp(&la).then_with(|| reqs[a].context.cmp(&reqs[b].context))
        });
        let eot = self.eot();
        let vocab = (self.tok.vocab_size() as i64).min(self.decoder().cfg.vocab_size);
        let decode = |t: &[i64]| -> Result<String> {
            let ids: Vec<u32> = t.iter().filter(|&&i| i != eot).map(|&i| i as u32).collect();
            self.tok.decode(&ids)
        };
        let cut = |text: &str, until: &[String]| -> Option<usize> {
            until.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min()
        };
        let mut out = vec![String::new(); reqs.len()];
        for chunk in order.chunks(batch_size) {
            let ids: Vec<&[i64]> = chunk.iter().map(|&i| reqs[i].context.as_slice()).collect();
            let imgs: Vec<&[PathBuf]> = chunk.iter().map(|&i| reqs[i].images.as_slice()).collect();
            let (rows, pixels) = self.rows(&ids, &imgs)?;
            let max_new = chunk.iter().map(|&i| reqs[i].max_new).max().unwrap_or(0);
            let opts = SampleOptions { temperature: 0.0, max_new_tokens: max_new, ..Default::default() };
            let on_token = |row: usize, new: &[i64]| {
                let r = &reqs[chunk[row]];
                new.len() < r.max_new && decode(new).map(|t| cut(&t, &r.until).is_none()).unwrap_or(true)
            };
            let tokens = match &self.lm {
                Lm::Gpt(g) => generate_batch_with(g, &rows, vocab, Some(eot), &opts, on_token, None)?,
                Lm::Vlm(v) => {
                    let embed = |x: &Tensor| v.embed(x, pixels.as_ref().map(Images::Pixels));
                    generate_batch_with(&v.language_model, &rows, vocab, Some(eot), &opts, on_token, Some(&embed))?
                }
            };
            for (row, &i) in chunk.iter().enumerate() {
                let mut text = decode(&tokens[row]).context("decoding a generation")?;
                if let Some(at) = cut(&text, &reqs[i].until) {
                    text.truncate(at);
                }
                out[i] = text;
            }
            bar.inc(chunk.len() as u64);
        }
        Ok(out)
    }
}

/// A checkpoint's name in results: its directory's name, or the run's when the directory is a
/// run's `checkpoint` (so `runs/small/checkpoint` is "small").
pub fn display_name(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    match name(&dir) {
        Some(n) if n == "checkpoint" => dir.parent().and_then(name).unwrap_or(n),
        Some(n) => n,
        None => dir.display().to_string(),
    }
}
