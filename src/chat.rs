//! The chat template, one for every chat consumer (multimodal instruction data, `vlm ask` and
//! `vlm chat`, the synthetic instruction corpus, and later SFT and RLHF). A turn is its role
//! marker, a newline, the content and `<|endoftext|>`; turns follow each other directly:
//!
//! ```text
//! <|system|>\nAnswer in one word.<|endoftext|><|user|>\n<image>\nWhat colour is the circle?<|endoftext|><|assistant|>\nred<|endoftext|>
//! ```
//!
//! A prompt for generation ends with `<|assistant|>\n` ([`generation_prompt`]); the model ends
//! its answer with `<|endoftext|>`, which is also the generation stop token, so a reply needs no
//! stop string. Images stand in the content as `<image>` placeholders. Because every marker and
//! `<|endoftext|>` is a special token, the tokenizer splits there: encoding turn by turn gives
//! the same ids as encoding the whole text, which is what lets the loss mask follow turns.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::special::{ASSISTANT, EOT, SYSTEM, USER};

/// Who speaks a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// The role of a message's `role` (OpenAI, TRL) or `from` (LLaVA: `human`, `gpt`) field.
    pub fn parse(name: &str) -> Result<Role> {
        Ok(match name {
            "system" => Role::System,
            "user" | "human" => Role::User,
            "assistant" | "gpt" => Role::Assistant,
            other => bail!("unknown role {other:?} (expected system, user or assistant; LLaVA's human or gpt)"),
        })
    }

    /// The tokenizer's special token that opens this role's turns.
    pub fn marker(self) -> &'static str {
        match self {
            Role::System => SYSTEM,
            Role::User => USER,
            Role::Assistant => ASSISTANT,
        }
    }
}

/// One message of a conversation, with `<image>` placeholders where its images stand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Turn {
    pub role: Role,
    pub content: String,
}

impl Turn {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into() }
    }
}

/// The text that opens a turn of `role`, before its content.
pub fn turn_header(role: Role) -> String {
    format!("{}\n", role.marker())
}

/// One whole turn: header, content, end of text.
pub fn render_turn(turn: &Turn) -> String {
    format!("{}{}{EOT}", turn_header(turn.role), turn.content)
}

/// A conversation as the model reads it.
pub fn render(turns: &[Turn]) -> String {
    turns.iter().map(render_turn).collect()
}

/// `turns` followed by an open assistant turn: what the model continues to answer.
pub fn generation_prompt(turns: &[Turn]) -> String {
    render(turns) + &turn_header(Role::Assistant)
}

/// The turns of a rendered conversation: the inverse of [`render`]. Content may not itself hold
/// a role marker or `<|endoftext|>` (the tokenizer would read those as structure).
pub fn parse(text: &str) -> Result<Vec<Turn>> {
    let mut turns = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some((role, after)) = [Role::System, Role::User, Role::Assistant]
            .into_iter()
            .find_map(|r| rest.strip_prefix(turn_header(r).as_str()).map(|after| (r, after)))
        else {
            bail!("a chat turn must start with a role marker and a newline, found {:?}", truncate(rest));
        };
        let Some(end) = after.find(EOT) else {
            bail!("the {:?} turn does not end with {EOT}", role);
        };
        let content = &after[..end];
        if let Some(marker) = [SYSTEM, USER, ASSISTANT].into_iter().find(|m| content.contains(m)) {
            bail!("a {role:?} turn holds the marker {marker} inside its content");
        }
        turns.push(Turn::new(role, content));
        rest = &after[end + EOT.len()..];
    }
    Ok(turns)
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation() -> Vec<Turn> {
        vec![
            Turn::new(Role::System, "Answer in one word."),
            Turn::new(Role::User, "<image>\nWhat colour is the circle?"),
            Turn::new(Role::Assistant, "red"),
            Turn::new(Role::User, "And the square?\nBe brief."),
            Turn::new(Role::Assistant, "blue"),
        ]
    }

    #[test]
    fn the_template_is_the_documented_one() {
        let turns = &conversation()[..3];
        assert_eq!(
            render(turns),
            "<|system|>\nAnswer in one word.<|endoftext|><|user|>\n<image>\nWhat colour is the circle?<|endoftext|>\
             <|assistant|>\nred<|endoftext|>"
        );
        assert_eq!(
            generation_prompt(&turns[..2]),
            "<|system|>\nAnswer in one word.<|endoftext|><|user|>\n<image>\nWhat colour is the circle?<|endoftext|>\
             <|assistant|>\n"
        );
    }

    #[test]
    fn render_and_parse_round_trip() {
        let turns = conversation();
        assert_eq!(parse(&render(&turns)).unwrap(), turns);
        assert_eq!(parse("").unwrap(), vec![]);
        let empty = vec![Turn::new(Role::User, ""), Turn::new(Role::Assistant, "")];
        assert_eq!(parse(&render(&empty)).unwrap(), empty);
    }

    #[test]
    fn malformed_conversations_are_refused() {
        for (text, why) in [
            ("hello", "must start with a role marker"),
            ("<|user|>\nhi", "does not end with"),
            ("<|user|>hi<|endoftext|>", "must start with a role marker"),
            ("<|user|>\nhi <|assistant|>\nyo<|endoftext|>", "inside its content"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn roles_parse_from_openai_and_llava_names() {
        assert_eq!(Role::parse("human").unwrap(), Role::User);
        assert_eq!(Role::parse("gpt").unwrap(), Role::Assistant);
        assert_eq!(Role::parse("system").unwrap(), Role::System);
        assert!(Role::parse("bot").unwrap_err().to_string().contains("unknown role"));
    }
}
