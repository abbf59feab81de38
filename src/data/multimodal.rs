//! Records that mix images and text, in the formats the ecosystem writes them, read into one
//! shape and encoded for the multimodal GPT.
//!
//! Accepted, one record per JSONL line (or, for LLaVA, one JSON array for the whole file):
//! - interleaved: `{"segments": [{"text": "..."}, {"image": "a.png"}, {"tokens": [1, 2]}, ...]}`;
//! - chat: `{"messages": [{"role": "user", "content": [{"image": "a.png"}, {"text": "..."}]},
//!   {"role": "assistant", "content": "..."}]}`; `content` is a string or a list of parts;
//! - TRL's typed parts: `{"type": "image"}` (the next path of the record's `images` list, or
//!   its own `"image"`) and `{"type": "text", "text": "..."}`;
//! - LLaVA's instruction JSON: `[{"id", "image": "a.png", "conversations": [{"from": "human",
//!   "value": "<image>\n..."}, {"from": "gpt", "value": "..."}]}]`.
//!
//! A literal `<image>` in any text is a placeholder for the record's next image of its `image` /
//! `images` field, so LLaVA's data loads unchanged. Image paths are relative to `image_root`
//! when given, else to the data file's folder. Text parts are tokenized one by one.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::{self, Role};
use crate::models::gpt::IGNORE_INDEX;
use crate::special::{EOT, IMAGE};
use crate::tokenizer::Tokenizer;

/// A piece of a record.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    Text(String),
    /// Token ids given directly (interleaved records only).
    Tokens(Vec<i64>),
    /// An image file, resolved to a path that exists.
    Image(PathBuf),
}

/// One message of a chat record.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
}

/// A record's content in gptlab's one shape, whatever format it came in.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// An image-text document (captioned images, interleaved pages): every text token trains.
    Interleaved(Vec<Part>),
    /// A conversation in the chat template.
    Chat(Vec<Message>),
}

/// A record and where it came from; `raw` keeps the line's other fields (a synthetic record's
/// `type`, `answer`, `k`).
#[derive(Clone, Debug)]
pub struct Item {
    pub record: Record,
    pub raw: Value,
    /// `FILE:LINE` (or `FILE[index]` for a JSON array), for error messages.
    pub origin: String,
}

/// Which text tokens of a chat record the loss is on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossOn {
    /// The assistant's answers and their closing end-of-text (LLaVA, TRL's default).
    #[default]
    Assistant,
    /// Every text token (captioning-style training on whole conversations).
    All,
}

/// A record as the model reads it: token ids with one `<image>` id per image, whether each
/// position is a training target, and the images in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub ids: Vec<i64>,
    pub trained: Vec<bool>,
    pub images: Vec<PathBuf>,
}

impl Example {
    /// Ids with each `<image>` repeated `n` times (the positions its projected tokens fill), and
    /// the labels: the id where the position trains, [`IGNORE_INDEX`] elsewhere and on images.
    pub fn expanded(&self, image_id: i64, n: usize) -> (Vec<i64>, Vec<i64>) {
        let mut ids = Vec::with_capacity(self.ids.len() + self.images.len() * n);
        let mut labels = Vec::with_capacity(ids.capacity());
        for (&id, &trained) in self.ids.iter().zip(&self.trained) {
            let copies = if id == image_id { n } else { 1 };
            ids.extend(std::iter::repeat_n(id, copies));
            let label = if trained && id != image_id { id } else { IGNORE_INDEX };
            labels.extend(std::iter::repeat_n(label, copies));
        }
        (ids, labels)
    }

    /// Decoder positions once each image takes `n`.
    pub fn expanded_len(&self, n: usize) -> usize {
        self.ids.len() + self.images.len() * (n.saturating_sub(1))
    }
}

/// Reads every record of `path`: a JSON array (LLaVA) or JSON Lines.
pub fn read_records(path: &Path, image_root: Option<&Path>) -> Result<Vec<Item>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let base =
        image_root.map(Path::to_path_buf).unwrap_or_else(|| path.parent().unwrap_or(Path::new(".")).to_path_buf());
    let lines: Vec<(String, Value)> = if text.trim_start().starts_with('[') {
        let all: Vec<Value> = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: malformed JSON array: {e}", path.display()))?;
        all.into_iter().enumerate().map(|(i, v)| (format!("{}[{i}]", path.display()), v)).collect()
    } else {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let origin = format!("{}:{}", path.display(), i + 1);
            let v = serde_json::from_str(line).map_err(|e| anyhow::anyhow!("{origin}: malformed JSON: {e}"))?;
            out.push((origin, v));
        }
        out
    };
    ensure!(!lines.is_empty(), "{} holds no records", path.display());
    lines
        .into_iter()
        .map(|(origin, raw)| {
            let record = parse_record(&raw, &base).with_context(|| origin.clone())?;
            Ok(Item { record, raw, origin })
        })
        .collect()
}

/// The images a record names at its top level (`image`: one path or a list; `images`: a list),
/// handed out in order to placeholders and typed image parts.
struct ImageQueue<'a> {
    paths: Vec<String>,
    next: usize,
    base: &'a Path,
}

impl ImageQueue<'_> {
    fn take(&mut self) -> Result<PathBuf> {
        let Some(name) = self.paths.get(self.next) else {
            bail!("the record has more image placeholders than images ({} given)", self.paths.len());
        };
        self.next += 1;
        resolve_image(self.base, name)
    }
}

fn resolve_image(base: &Path, name: &str) -> Result<PathBuf> {
    let path = base.join(name);
    ensure!(path.is_file(), "image {} does not exist", path.display());
    Ok(path)
}

fn string_list(v: &Value, key: &str) -> Result<Vec<String>> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).with_context(|| format!("\"{key}\" must list paths as strings")))
            .collect(),
        _ => bail!("\"{key}\" must be a path or a list of paths"),
    }
}

/// Parses one record; relative image paths resolve against `base`.
pub fn parse_record(v: &Value, base: &Path) -> Result<Record> {
    let obj = v.as_object().context("a record must be a JSON object")?;
    let mut paths = Vec::new();
    for key in ["image", "images"] {
        if let Some(list) = obj.get(key) {
            paths.extend(string_list(list, key)?);
        }
    }
    let mut queue = ImageQueue { paths, next: 0, base };
    let record = match (obj.get("segments"), obj.get("messages"), obj.get("conversations")) {
        (Some(segments), None, None) => {
            let segments = segments.as_array().context("\"segments\" must be a list")?;
            let mut parts = Vec::new();
            for s in segments {
                parts.extend(parse_part(s, &mut queue, true)?);
            }
            Record::Interleaved(parts)
        }
        (None, Some(messages), None) => {
            let messages = messages.as_array().context("\"messages\" must be a list")?;
            Record::Chat(
                messages.iter().map(|m| parse_message(m, "role", "content", &mut queue)).collect::<Result<_>>()?,
            )
        }
        (None, None, Some(turns)) => {
            let turns = turns.as_array().context("\"conversations\" must be a list")?;
            Record::Chat(turns.iter().map(|m| parse_message(m, "from", "value", &mut queue)).collect::<Result<_>>()?)
        }
        (None, None, None) => bail!("a record needs \"segments\", \"messages\" or LLaVA's \"conversations\""),
        _ => bail!("a record holds exactly one of \"segments\", \"messages\" and \"conversations\""),
    };
    ensure!(
        queue.next == queue.paths.len(),
        "the record names {} image(s) but its text has {} placeholder(s)",
        queue.paths.len(),
        queue.next
    );
    if let Record::Chat(messages) = &record {
        ensure!(!messages.is_empty(), "a chat record needs at least one message");
        if messages.iter().any(|m| m.role == Role::Assistant && m.parts.iter().any(|p| matches!(p, Part::Image(_)))) {
            bail!("an image in an assistant turn: images belong to user (or system) turns");
        }
    }
    Ok(record)
}

fn parse_message(m: &Value, role_key: &str, content_key: &str, queue: &mut ImageQueue) -> Result<Message> {
    let role = m.get(role_key).and_then(Value::as_str).with_context(|| format!("a message needs a \"{role_key}\""))?;
    let role = Role::parse(role)?;
    let content = m.get(content_key).with_context(|| format!("a message needs \"{content_key}\""))?;
    let parts = match content {
        Value::String(text) => split_placeholders(text, queue)?,
        Value::Array(items) => {
            let mut parts = Vec::new();
            for item in items {
                parts.extend(parse_part(item, queue, false)?);
            }
            parts
        }
        _ => bail!("\"{content_key}\" must be a string or a list of parts"),
    };
    Ok(Message { role, parts })
}

/// One part: `{"text"}`, `{"image"}`, `{"tokens"}` (interleaved only) or TRL's
/// `{"type": "text" | "image", ...}`.
fn parse_part(v: &Value, queue: &mut ImageQueue, tokens_allowed: bool) -> Result<Vec<Part>> {
    let obj = v.as_object().context("a part must be a JSON object")?;
    let kind = match obj.get("type") {
        Some(t) => t.as_str().context("a part's \"type\" must be a string")?.to_string(),
        None => {
            let keys: Vec<&str> = ["text", "image", "tokens"].into_iter().filter(|k| obj.contains_key(*k)).collect();
            ensure!(keys.len() == 1, "a part holds exactly one of \"text\", \"image\" and \"tokens\"");
            keys[0].to_string()
        }
    };
    match kind.as_str() {
        "text" => {
            let text = obj.get("text").and_then(Value::as_str).context("a text part needs \"text\" as a string")?;
            split_placeholders(text, queue)
        }
        "image" => match obj.get("image") {
            Some(name) => {
                let name = name.as_str().context("an image part's \"image\" must be a path")?;
                Ok(vec![Part::Image(resolve_image(queue.base, name)?)])
            }
            None => Ok(vec![Part::Image(queue.take()?)]),
        },
        "tokens" => {
            ensure!(tokens_allowed, "token parts are for interleaved records (\"segments\") only");
            let ids = obj.get("tokens").and_then(Value::as_array).context("\"tokens\" must be a list of ids")?;
            let ids = ids.iter().map(|i| i.as_i64().context("\"tokens\" must hold integers")).collect::<Result<_>>()?;
            Ok(vec![Part::Tokens(ids)])
        }
        other => bail!("unknown part type {other:?} (expected text or image)"),
    }
}

/// Text with each literal `<image>` turned into the next image of the record.
fn split_placeholders(text: &str, queue: &mut ImageQueue) -> Result<Vec<Part>> {
    let mut parts = Vec::new();
    for (i, piece) in text.split(IMAGE).enumerate() {
        if i > 0 {
            parts.push(Part::Image(queue.take()?));
        }
        if !piece.is_empty() {
            parts.push(Part::Text(piece.to_string()));
        }
    }
    Ok(parts)
}

impl Record {
    /// Token ids, loss mask and images of this record: chats in the chat template, the loss on
    /// `loss_on`; interleaved records train on every text token.
    pub fn encode(&self, tok: &Tokenizer, loss_on: LossOn) -> Result<Example> {
        let image_id = tok.token_to_id(IMAGE).context("the tokenizer has no <image> token")? as i64;
        let vocab = tok.vocab_size() as i64;
        let mut ex = Example { ids: Vec::new(), trained: Vec::new(), images: Vec::new() };
        let push_text = |ex: &mut Example, text: &str, trained: bool| -> Result<()> {
            let ids = tok.encode(text)?;
            ex.trained.extend(std::iter::repeat_n(trained, ids.len()));
            ex.ids.extend(ids.into_iter().map(i64::from));
            Ok(())
        };
        let push_parts = |ex: &mut Example, parts: &[Part], trained: bool| -> Result<()> {
            for part in parts {
                match part {
                    Part::Text(text) => push_text(ex, text, trained)?,
                    Part::Tokens(ids) => {
                        if let Some(bad) = ids.iter().find(|&&t| t < 0 || t >= vocab || t == image_id) {
                            bail!("token id {bad} is outside the vocabulary (0..{vocab}) or is the <image> id");
                        }
                        ex.ids.extend(ids);
                        ex.trained.extend(std::iter::repeat_n(trained, ids.len()));
                    }
                    Part::Image(path) => {
                        ex.ids.push(image_id);
                        ex.trained.push(false);
                        ex.images.push(path.clone());
                    }
                }
            }
            Ok(())
        };
        match self {
            Record::Interleaved(parts) => push_parts(&mut ex, parts, true)?,
            Record::Chat(messages) => {
                for m in messages {
                    let answer = loss_on == LossOn::All || m.role == Role::Assistant;
                    push_text(&mut ex, &chat::turn_header(m.role), loss_on == LossOn::All)?;
                    push_parts(&mut ex, &m.parts, answer)?;
                    push_text(&mut ex, EOT, answer)?;
                }
            }
        }
        ensure!(!ex.ids.is_empty(), "the record has no content");
        Ok(ex)
    }

    /// The chat messages before the last assistant turn, and that turn's text: a question to
    /// ask and the answer to compare with.
    pub fn split_last_answer(&self) -> Result<(Vec<Message>, String)> {
        let Record::Chat(messages) = self else {
            bail!("only a chat record has an assistant answer");
        };
        let Some((last, before)) = messages.split_last().filter(|(m, _)| m.role == Role::Assistant) else {
            bail!("the chat does not end with an assistant turn");
        };
        let text = last.parts.iter().map(|p| if let Part::Text(t) = p { t.as_str() } else { "" }).collect();
        Ok((before.to_vec(), text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base_with(names: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for n in names {
            std::fs::write(dir.path().join(n), b"not decoded here").unwrap();
        }
        dir
    }

    #[test]
    fn every_format_reads_into_the_same_chat() {
        let dir = base_with(&["a.png"]);
        let a = dir.path().join("a.png");
        let expected = Record::Chat(vec![
            Message { role: Role::User, parts: vec![Part::Image(a.clone()), Part::Text("\nWhat is it?".into())] },
            Message { role: Role::Assistant, parts: vec![Part::Text("a star".into())] },
        ]);
        let forms = [
            json!({"messages": [{"role": "user", "content": [{"image": "a.png"}, {"text": "\nWhat is it?"}]},
                                 {"role": "assistant", "content": "a star"}]}),
            json!({"images": ["a.png"], "messages": [{"role": "user", "content": "<image>\nWhat is it?"},
                                                     {"role": "assistant", "content": "a star"}]}),
            json!({"images": ["a.png"], "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "\nWhat is it?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "a star"}]}]}),
            json!({"id": "7", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nWhat is it?"},
                                                                  {"from": "gpt", "value": "a star"}]}),
        ];
        for form in forms {
            assert_eq!(parse_record(&form, dir.path()).unwrap(), expected, "{form}");
        }
    }

    #[test]
    fn bad_records_name_the_problem() {
        let dir = base_with(&["a.png"]);
        for (record, why) in [
            (
                json!({"images": ["a.png", "a.png"], "messages": [{"role": "user", "content": "<image>"}]}),
                "2 image(s) but",
            ),
            (
                json!({"messages": [{"role": "user", "content": "<image> twice <image>"}], "image": "a.png"}),
                "more image placeholders",
            ),
            (json!({"messages": [{"role": "user", "content": [{"image": "missing.png"}]}]}), "does not exist"),
            (json!({"messages": [{"role": "assistant", "content": [{"image": "a.png"}]}]}), "assistant turn"),
            (json!({"messages": [{"role": "bot", "content": "hi"}]}), "unknown role"),
            (json!({"messages": [{"role": "user", "content": [{"tokens": [1]}]}]}), "interleaved records"),
            (json!({"segments": [{"text": "a", "image": "a.png"}]}), "exactly one of"),
            (json!({"text": "plain"}), "needs \"segments\""),
            (json!({"messages": []}), "at least one message"),
        ] {
            let err = format!("{:#}", parse_record(&record, dir.path()).unwrap_err());
            assert!(err.contains(why), "{record}: {err}");
        }
    }

    #[test]
    fn a_llava_json_array_and_jsonl_both_read() {
        let dir = base_with(&["a.png"]);
        let llava = dir.path().join("llava.json");
        let record = json!({"id": "1", "image": "a.png", "conversations": [
            {"from": "human", "value": "<image>\nDescribe it."}, {"from": "gpt", "value": "a dial"}]});
        std::fs::write(&llava, serde_json::to_string(&json!([record, record])).unwrap()).unwrap();
        let items = read_records(&llava, None).unwrap();
        assert_eq!(items.len(), 2);
        assert!(items[1].origin.ends_with("llava.json[1]"));
        let lines = dir.path().join("x.jsonl");
        std::fs::write(&lines, format!("{}\n\n{}\n", record, json!({"segments": [{"text": "hi"}]}))).unwrap();
        let items = read_records(&lines, None).unwrap();
        assert!(matches!(items[1].record, Record::Interleaved(_)));
        std::fs::write(&lines, "{\"segments\": [{\"image\": \"b.png\"}]}\n").unwrap();
        let err = format!("{:#}", read_records(&lines, None).unwrap_err());
        assert!(err.contains("x.jsonl:1") && err.contains("b.png does not exist"), "{err}");
        let root = base_with(&["b.png"]);
        assert!(read_records(&lines, Some(root.path())).is_ok(), "--image-root resolves relative paths");
    }

    #[test]
    fn expansion_repeats_images_and_never_trains_them() {
        let images = vec![PathBuf::from("a.png"), PathBuf::from("b.png")];
        let ex = Example { ids: vec![5, 2, 6, 2, 7], trained: vec![false, false, true, false, true], images };
        let (ids, labels) = ex.expanded(2, 3);
        assert_eq!(ids, vec![5, 2, 2, 2, 6, 2, 2, 2, 7]);
        let i = IGNORE_INDEX;
        assert_eq!(labels, vec![i, i, i, i, 6, i, i, i, 7]);
        assert_eq!(ex.expanded_len(3), ids.len());
    }
}
