//! Metrics as JSON lines, one object per logged step: easy to tail, plot, or load in pandas.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

pub struct MetricsLog {
    file: File,
}

impl MetricsLog {
    /// Starts a fresh log, or, when resuming at `resume_step`, keeps the lines up to that step
    /// and drops those a killed run wrote after its last checkpoint.
    pub fn open(path: &Path, resume_step: Option<u64>) -> Result<Self> {
        let kept = match resume_step {
            Some(step) if path.exists() => {
                read_jsonl(path)?.into_iter().filter(|v| v["step"].as_u64().is_some_and(|s| s <= step)).collect()
            }
            _ => Vec::new(),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        for v in kept {
            writeln!(file, "{v}")?;
        }
        Ok(Self { file })
    }

    pub fn write(&mut self, record: &Value) -> Result<()> {
        writeln!(self.file, "{record}")?;
        self.file.flush()?;
        Ok(())
    }
}

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
