//! RLHF data in TRL's field names, plus the K-wise rankings TRL has no format for:
//!
//! - SFT: `{"prompt", "completion"}` (strings) or `{"messages": [...]}` in the chat template;
//! - preferences: `{"prompt", "chosen", "rejected"}`, a ranking of two;
//! - rankings: `{"prompt", "responses": [...], "ranking": [...]}`, `ranking` listing indices into
//!   `responses`, best first (InstructGPT's K = 4..9);
//! - prompts: `{"prompt"}` (the labeler's also carry `answer` and `unsafe`, what it judges by).
//!
//! A prompt is a user turn; a response is the assistant's turn after it. `gptlab rlhf data`
//! writes all four from the embedded world, ranked by the programmatic [`labeler`].
//!
//! [`labeler`]: super::labeler

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use super::labeler::LabelPrompt;
use crate::chat::Role;
use crate::data::multimodal::{parse_record, LossOn, Message, Part, Record};
use crate::models::gpt::IGNORE_INDEX;
use crate::special::IMAGE;
use crate::synth::Holdout;
use crate::tokenizer::Tokenizer;
use tch::{Device, Tensor};

/// A prompt with K ranked responses.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    pub prompt: String,
    pub responses: Vec<String>,
    /// Indices into `responses`, best first.
    pub ranking: Vec<usize>,
}

impl Ranked {
    /// Every (better, worse) pair of the ranking: C(K, 2) of them.
    pub fn pairs(&self) -> Vec<(usize, usize)> {
        let r = &self.ranking;
        (0..r.len()).flat_map(|i| (i + 1..r.len()).map(move |j| (r[i], r[j]))).collect()
    }
}

fn string_field(v: &Value, key: &str) -> Result<String> {
    match v.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => bail!("\"{key}\" must be a string"),
        None => bail!("lacks \"{key}\""),
    }
}

/// One ranking record: a preference pair or a K-wise ranking, checked.
pub fn parse_ranked(v: &Value) -> Result<Ranked> {
    let prompt = string_field(v, "prompt")?;
    let (responses, ranking) = match (v.get("chosen"), v.get("responses")) {
        (Some(_), None) => {
            let (chosen, rejected) = (string_field(v, "chosen")?, string_field(v, "rejected")?);
            ensure!(chosen != rejected, "\"chosen\" equals \"rejected\": a preference needs two different responses");
            (vec![chosen, rejected], vec![0, 1])
        }
        (None, Some(Value::Array(list))) => {
            let responses = list
                .iter()
                .map(|r| r.as_str().map(str::to_string).context("every response must be a string"))
                .collect::<Result<Vec<_>>>()?;
            let ranking = match v.get("ranking") {
                Some(Value::Array(r)) => r
                    .iter()
                    .map(|i| i.as_u64().map(|i| i as usize).context("\"ranking\" must list response indices"))
                    .collect::<Result<Vec<_>>>()?,
                _ => bail!("lacks \"ranking\" (indices into \"responses\", best first)"),
            };
            let mut sorted = ranking.clone();
            sorted.sort_unstable();
            ensure!(
                sorted == (0..responses.len()).collect::<Vec<_>>(),
                "\"ranking\" {ranking:?} is not a permutation of the {} response indices",
                responses.len()
            );
            (responses, ranking)
        }
        (None, Some(_)) => bail!("\"responses\" must be a list"),
        (Some(_), Some(_)) => bail!("give either \"chosen\"/\"rejected\" or \"responses\"/\"ranking\", not both"),
        (None, None) => bail!("a ranking record needs \"chosen\" and \"rejected\", or \"responses\" and \"ranking\""),
    };
    ensure!(responses.len() >= 2, "a ranking needs at least two responses");
    if let Some(i) = responses.iter().position(|r| r.trim().is_empty()) {
        bail!("response {i} is empty");
    }
    Ok(Ranked { prompt, responses, ranking })
}

/// One SFT record as a chat: `{"prompt", "completion"}` becomes a user and an assistant turn;
/// `{"messages"}` is read as the chat template reads it (text only).
pub fn parse_sft(v: &Value) -> Result<Record> {
    if v.get("messages").is_some() {
        let record = parse_record(v, Path::new("."))?;
        if let Record::Chat(messages) = &record {
            ensure!(
                messages.iter().all(|m| m.parts.iter().all(|p| matches!(p, Part::Text(_)))),
                "SFT records are text: this one holds an image"
            );
            ensure!(messages.iter().any(|m| m.role == Role::Assistant), "the chat has no assistant turn to train on");
        }
        return Ok(record);
    }
    let (prompt, completion) = (string_field(v, "prompt")?, string_field(v, "completion")?);
    ensure!(!completion.trim().is_empty(), "the completion is empty");
    Ok(Record::Chat(vec![
        Message { role: Role::User, parts: vec![Part::Text(prompt)] },
        Message { role: Role::Assistant, parts: vec![Part::Text(completion)] },
    ]))
}

/// A chat as token ids and labels: the id where the position trains (the assistant's tokens and
/// their end-of-text), [`IGNORE_INDEX`] elsewhere.
pub type Labelled = (Vec<i64>, Vec<i64>);

/// Encodes a text chat with the loss on the assistant's turns.
pub fn encode_chat(record: &Record, tok: &Tokenizer) -> Result<Labelled> {
    let ex = record.encode(tok, LossOn::Assistant)?;
    let image_id = tok.token_to_id(IMAGE).map_or(-1, i64::from);
    Ok(ex.expanded(image_id, 1))
}

/// Right-padded ids [B, T] of `rows`, their next-token targets [B, T - 1] (the label of the
/// position after, padding ignored), and the real positions.
pub fn batch_rows(rows: &[&Labelled], pad: i64, device: Device) -> (Tensor, Tensor, usize) {
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(1);
    let (mut ids, mut targets, mut positions) = (Vec::new(), Vec::new(), 0);
    for (x, y) in rows {
        positions += x.len();
        ids.extend(x.iter().copied().chain(std::iter::repeat_n(pad, width - x.len())));
        targets.extend(y[1..].iter().copied().chain(std::iter::repeat_n(IGNORE_INDEX, width - x.len())));
    }
    let b = rows.len() as i64;
    let ids = Tensor::from_slice(&ids).view([b, width as i64]).to_device(device);
    let targets = Tensor::from_slice(&targets).view([b, width as i64 - 1]).to_device(device);
    (ids, targets, positions)
}

/// How many positions of `rows` are trained (the terms [`batch_rows`]' targets average over).
pub fn trained_targets(rows: &[&Labelled]) -> usize {
    rows.iter().map(|(_, y)| y[1..].iter().filter(|&&t| t != IGNORE_INDEX).count()).sum()
}

/// Reads a JSONL file record by record with `parse`, naming the line of a bad one.
pub fn read<T>(path: &Path, parse: impl Fn(&Value) -> Result<T>) -> Result<Vec<T>> {
    let records = crate::jsonl::read_jsonl(path)?;
    ensure!(!records.is_empty(), "{} holds no records", path.display());
    records
        .iter()
        .enumerate()
        .map(|(i, v)| parse(v).with_context(|| format!("{} line {}", path.display(), i + 1)))
        .collect()
}

/// Writes the embedded world's RLHF data into `dir`: `sft.jsonl` (demonstrations),
/// `rankings.jsonl` (K = 4..9 labeled responses), `preferences.jsonl` (the best against the
/// worst of each ranking), and `prompts.jsonl`, `n` prompts each from their own seeded streams,
/// with `*_val.jsonl` held-out twins of a tenth the size.
pub fn write_synthetic(dir: &Path, n: usize, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let holdout = Holdout::default();
    for (suffix, count, stream) in [("", n, 0u64), ("_val", n.div_ceil(10), 1)] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        let mut sft = Vec::new();
        let mut rankings = Vec::new();
        let mut prefs = Vec::new();
        let mut prompts = Vec::new();
        for _ in 0..count {
            let p = LabelPrompt::random(&mut rng, &holdout);
            sft.push(json!({"prompt": p.text(), "completion": p.demonstration()}));
            let k = rng.random_range(4..=9);
            let responses = p.candidates(k, &mut rng);
            let ranking = p.rank(&responses);
            let (best, worst) = (ranking[0], ranking[ranking.len() - 1]);
            prefs.push(json!({"prompt": p.text(), "chosen": responses[best], "rejected": responses[worst]}));
            rankings.push(json!({"prompt": p.text(), "responses": responses, "ranking": ranking}));
            let q = LabelPrompt::random(&mut rng, &holdout);
            prompts.push(q.record());
        }
        for (name, items) in [("sft", &sft), ("rankings", &rankings), ("preferences", &prefs), ("prompts", &prompts)] {
            crate::jsonl::write_jsonl(&dir.join(format!("{name}{suffix}.jsonl")), items)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rankings_expand_to_every_pair_and_bad_records_say_why() {
        let r = parse_ranked(&json!({"prompt": "p", "responses": ["a", "b", "c"], "ranking": [2, 0, 1]})).unwrap();
        assert_eq!(r.pairs(), vec![(2, 0), (2, 1), (0, 1)]);
        let pref = parse_ranked(&json!({"prompt": "p", "chosen": "a", "rejected": "b"})).unwrap();
        assert_eq!((pref.responses.len(), pref.pairs()), (2, vec![(0, 1)]));
        let err = |v: Value| format!("{:#}", parse_ranked(&v).unwrap_err());
        assert!(err(json!({"prompt": "p", "responses": ["a", "b"], "ranking": [0, 0]})).contains("not a permutation"));
        assert!(err(json!({"prompt": "p", "responses": ["a", "b"], "ranking": [0, 2]})).contains("not a permutation"));
        assert!(err(json!({"prompt": "p", "chosen": "a", "rejected": "a"})).contains("equals"));
        assert!(err(json!({"prompt": "p", "responses": ["a", " "], "ranking": [0, 1]})).contains("response 1 is empty"));
        assert!(err(json!({"responses": ["a", "b"], "ranking": [0, 1]})).contains("lacks \"prompt\""));
    }

    #[test]
    fn sft_records_become_chats() {
        let r = parse_sft(&json!({"prompt": "Spell it.", "completion": "ti"})).unwrap();
        let Record::Chat(m) = r else { panic!("a chat") };
        assert_eq!((m[0].role, m[1].role), (Role::User, Role::Assistant));
        assert!(format!("{:#}", parse_sft(&json!({"prompt": "p", "completion": ""})).unwrap_err()).contains("empty"));
        let chat = json!({"messages": [{"role": "user", "content": "hi"}]});
        assert!(format!("{:#}", parse_sft(&chat).unwrap_err()).contains("no assistant turn"));
    }
}
