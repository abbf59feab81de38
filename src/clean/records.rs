//! The records the cleaning stages read and write: JSONL files (a file, or every `*.jsonl` under a
//! folder, in path order), each record with its file and line, outputs written through a
//! temporary file and a rename.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

/// One input record: where it came from, its line as read, and its parsed value.
pub struct Doc {
    pub path: PathBuf,
    pub line: usize,
    pub raw: String,
    pub value: Value,
}

/// The JSONL files of `input`: the file itself, or every `*.jsonl` under the folder, by path.
pub fn input_files(input: &Path) -> Result<Vec<PathBuf>> {
    if input.is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
    ensure!(input.is_dir(), "{} does not exist", input.display());
    let mut files = Vec::new();
    let mut stack = vec![input.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "jsonl") {
                files.push(p);
            }
        }
    }
    files.sort();
    ensure!(!files.is_empty(), "{} holds no .jsonl files", input.display());
    Ok(files)
}

/// Every record of `files`, parsed in parallel; the first bad line, in input order, is the error.
pub fn read_docs(files: &[PathBuf], field: &str) -> Result<Vec<Doc>> {
    use rayon::prelude::*;
    let mut docs = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let lines: Vec<(usize, &str)> =
            text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, l)| (i + 1, l)).collect();
        let parsed: Vec<Result<Doc>> = lines
            .par_iter()
            .map(|&(line, raw)| {
                let at = || format!("{}:{line}", path.display());
                let value: Value =
                    serde_json::from_str(raw).map_err(|e| anyhow::anyhow!("{}: malformed JSON: {e}", at()))?;
                if !value.get(field).is_some_and(Value::is_string) {
                    bail!("{}: no \"{field}\" string (--field names the text)", at());
                }
                Ok(Doc { path: path.clone(), line, raw: raw.to_string(), value })
            })
            .collect();
        for d in parsed {
            docs.push(d?);
        }
    }
    ensure!(!docs.is_empty(), "no records to deduplicate");
    Ok(docs)
}

/// The text field of every record of `input` (a file or a folder).
pub fn read_texts(input: &Path, field: &str) -> Result<Vec<String>> {
    let docs = read_docs(&input_files(input)?, field)?;
    Ok(docs.into_iter().map(|d| d.value[field].as_str().unwrap_or_default().to_string()).collect())
}

/// Writes `lines` to `path` through a temporary file and a rename.
pub fn write_lines<S: AsRef<str>>(path: &Path, lines: impl Iterator<Item = S>) -> Result<()> {
    let tmp = path.with_extension("jsonl.tmp");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
    );
    for l in lines {
        out.write_all(l.as_ref().as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush().with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(out);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))
}
