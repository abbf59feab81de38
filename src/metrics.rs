//! Metrics as JSON lines, one object per logged step: easy to tail, plot, or load in pandas.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub struct MetricsLog {
    file: File,
}

impl MetricsLog {
    /// Starts a fresh log, or, when resuming at `resume_step`, keeps the lines up to that step
    /// and drops those a killed run wrote after its last checkpoint. The kept lines are
    /// rewritten through a temp file and a rename, so a kill cannot lose them, and a last line
    /// cut short by a kill is dropped rather than blocking the resume.
    pub fn open(path: &Path, resume_step: Option<u64>) -> Result<Self> {
        let kept: Vec<Value> = match resume_step {
            Some(step) if path.exists() => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                let mut kept = Vec::new();
                for (i, line) in lines.iter().enumerate() {
                    match serde_json::from_str::<Value>(line) {
                        Ok(v) if v["step"].as_u64().is_some_and(|s| s <= step) => kept.push(v),
                        Ok(_) => {}
                        Err(_) if i + 1 == lines.len() => {}
                        Err(e) => bail!("{}: line {}: malformed JSON: {e}", path.display(), i + 1),
                    }
                }
                kept
            }
            _ => Vec::new(),
        };
        let tmp = path.with_extension("jsonl.tmp");
        let body: String = kept.iter().map(|v| format!("{v}\n")).collect();
        std::fs::write(&tmp, body).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
        let file = OpenOptions::new().append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { file })
    }

    /// One `write` call a line, so a kill leaves whole lines or a cut last line, never a mix.
    pub fn write(&mut self, record: &Value) -> Result<()> {
        self.file.write_all(format!("{record}\n").as_bytes())?;
        Ok(())
    }
}
