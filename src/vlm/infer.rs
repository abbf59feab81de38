//! Using a trained VLM: answering chat prompts with images (batched, one prefill per prompt with
//! its images, then KV-cached steps; the same decoding loop as the text GPT), and scoring
//! interleaved records token by token.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use tch::{Device, Kind, Tensor};

use super::data::load_pixels;
use crate::chat::{self, Role};
use crate::data::multimodal::{LossOn, Message, Part, Record};
use crate::infer::generate::{generate_batch_with, SampleOptions};
use crate::infer::score::Scored;
use crate::models::vlm::{Images, Vlm};
use crate::special::IMAGE;
use crate::tokenizer::Tokenizer;

/// A prompt as the decoder reads it: ids with one `<image>` id per image, and its images.
#[derive(Clone, Debug)]
pub struct Prompt {
    pub ids: Vec<i64>,
    pub images: Vec<PathBuf>,
}

/// `messages` in the chat template, ending in an open assistant turn.
pub fn chat_prompt(tok: &Tokenizer, messages: &[Message]) -> Result<Prompt> {
    let mut ex = Record::Chat(messages.to_vec()).encode(tok, LossOn::Assistant)?;
    ex.ids.extend(tok.encode(&chat::turn_header(Role::Assistant))?.into_iter().map(i64::from));
    Ok(Prompt { ids: ex.ids, images: ex.images })
}

/// A user message from text with `<image>` placeholders and `images`: images beyond the
/// placeholders go first, each on its own line.
pub fn user_message(text: &str, images: &[PathBuf]) -> Result<Message> {
    let placeholders = text.matches(IMAGE).count();
    ensure!(
        placeholders <= images.len(),
        "the text has {placeholders} <image> placeholder(s) but {} image(s) were given",
        images.len()
    );
    let extra = images.len() - placeholders;
    let mut parts = Vec::new();
    let mut queue = images.iter();
    for path in queue.by_ref().take(extra) {
        parts.push(Part::Image(path.clone()));
        parts.push(Part::Text("\n".into()));
    }
    for (i, piece) in text.split(IMAGE).enumerate() {
        if i > 0 {
            parts.push(Part::Image(queue.next().context("placeholder without image")?.clone()));
        }
        if !piece.is_empty() {
            parts.push(Part::Text(piece.to_string()));
        }
    }
    for p in &parts {
        if let Part::Image(path) = p {
            ensure!(!path.is_dir(), "image {} is a directory; give an image file", path.display());
            ensure!(path.is_file(), "image {} does not exist", path.display());
        }
    }
    Ok(Message { role: Role::User, parts })
}

/// The images of `prompts`, in row order, as the model's input.
fn pixels(model: &Vlm, prompts: &[&Prompt], device: Device) -> Result<Option<Tensor>> {
    let paths: Vec<PathBuf> = prompts.iter().flat_map(|p| p.images.iter().cloned()).collect();
    let table = load_pixels(&paths, &model.cfg)?;
    Ok(table.gather(&(0..paths.len()).collect::<Vec<_>>(), device))
}

/// Answers every prompt at once: its text up to the model's end-of-text (which is not included).
pub fn answer_batch(model: &Vlm, tok: &Tokenizer, prompts: &[Prompt], opts: &SampleOptions) -> Result<Vec<String>> {
    let device = model.device();
    let n = model.cfg.tokens_per_image() as usize;
    let rows: Vec<Vec<i64>> =
        prompts.iter().map(|p| crate::models::vlm::expand_placeholders(&p.ids, model.cfg.image_token_id, n)).collect();
    let px = pixels(model, &prompts.iter().collect::<Vec<_>>(), device)?;
    let embed = |ids: &Tensor| model.embed(ids, px.as_ref().map(Images::Pixels));
    let eot = tok.eot() as i64;
    let vocab = (tok.vocab_size() as i64).min(model.cfg.text.vocab_size);
    let out = generate_batch_with(&model.language_model, &rows, vocab, Some(eot), opts, |_, _| true, Some(&embed))?;
    out.into_iter()
        .map(|ids| {
            let ids: Vec<u32> = ids.into_iter().take_while(|&t| t != eot).map(|t| t as u32).collect();
            tok.decode(&ids)
        })
        .collect()
}

/// Per-token log-probabilities of one interleaved or chat record (as `score` reports them):
/// `token_logprobs[i]` is log P(text token i+1 | everything before it), over the text tokens
/// after the first, images skipped.
pub fn score_record(model: &Vlm, tok: &Tokenizer, record: &Record) -> Result<Scored> {
    let ex = record.encode(tok, LossOn::All)?;
    let n = model.cfg.tokens_per_image() as usize;
    let image_id = model.cfg.image_token_id;
    let (ids, _) = ex.expanded(image_id, n);
    let block = model.cfg.text.block_size as usize;
    ensure!(
        ids.len() <= block,
        "{} positions ({} image(s) of {n} tokens) exceed the decoder's context of {block}",
        ids.len(),
        ex.images.len()
    );
    let device = model.device();
    let prompt = Prompt { ids: ex.ids.clone(), images: ex.images.clone() };
    let px = pixels(model, &[&prompt], device)?;
    let x = Tensor::from_slice(&ids).to_device(device).unsqueeze(0); // [1, T]
    let logits = tch::no_grad(|| model.forward(&x, px.as_ref().map(Images::Pixels), Default::default()))?; // [1, T, V]
    let logp = logits.get(0).log_softmax(-1, Kind::Float).to_kind(Kind::Double); // [T, V]
    let first_text = ids.iter().position(|&t| t != image_id);
    let mut token_logprobs = Vec::new();
    for (i, &id) in ids.iter().enumerate().skip(1) {
        if id == image_id || Some(i) <= first_text {
            continue;
        }
        token_logprobs.push(logp.double_value(&[i as i64 - 1, id]));
    }
    Ok(Scored { total_logprob: token_logprobs.iter().sum(), token_logprobs })
}
