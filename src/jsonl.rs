//! JSON Lines, the format of corpora, metrics, scores and embeddings: one object per line.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

/// Every line of a JSONL file as a JSON value; errors name the file and line.
pub fn read_jsonl(path: &Path) -> Result<Vec<Value>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: unreadable line", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{}:{}: malformed JSON: {e}", path.display(), i + 1))?;
        out.push(v);
    }
    Ok(out)
}

/// Writes one JSON object per line.
pub fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> Result<()> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::new(file);
    let failed = || format!("cannot write {}", path.display());
    for item in items {
        serde_json::to_writer(&mut out, item).with_context(failed)?;
        out.write_all(b"\n").with_context(failed)?;
    }
    out.flush().with_context(failed)
}
