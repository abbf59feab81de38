//! The records the cleaning stages read and write: JSONL files (a file, or every `*.jsonl` under a
//! folder, in path order), each record with its file and line, outputs written through a
//! temporary file and a rename.

use std::io::{BufRead, BufReader, Write};
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

/// One non-blank input line: its file (an index into the file list), its line number (from 1,
/// blank lines counted) and its text.
pub struct RawLine {
    pub file: usize,
    pub line: usize,
    pub raw: String,
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

/// A record parsed from its line; `at` names the line (`path:line`) in errors.
pub fn parse(raw: &str, field: &str, at: &str) -> Result<Value> {
    let value: Value = serde_json::from_str(raw).map_err(|e| anyhow::anyhow!("{at}: malformed JSON: {e}"))?;
    if !value.get(field).is_some_and(Value::is_string) {
        bail!("{at}: no \"{field}\" string (--field names the text)");
    }
    Ok(value)
}

/// The non-blank lines of `files` in order, read as they are consumed, so a pass over a corpus
/// holds one line at a time rather than the corpus.
pub fn lines(files: &[PathBuf]) -> impl Iterator<Item = Result<RawLine>> + '_ {
    files.iter().enumerate().flat_map(|(file, path)| {
        let reader = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()));
        let (ok, err) = match reader {
            Ok(f) => (Some(BufReader::new(f).lines()), None),
            Err(e) => (None, Some(Err(e))),
        };
        err.into_iter().chain(ok.into_iter().flatten().enumerate().filter_map(move |(i, l)| match l {
            Ok(raw) if raw.trim().is_empty() => None,
            Ok(raw) => Some(Ok(RawLine { file, line: i + 1, raw })),
            Err(e) => Some(Err(anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))),
        }))
    })
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
                let value = parse(raw, field, &format!("{}:{line}", path.display()))?;
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

/// A JSONL file written line by line into a temporary file, which `commit` renames into place,
/// so a failed run leaves no half-written output.
pub struct JsonlWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl JsonlWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let tmp = path.with_extension("jsonl.tmp");
        let file = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(Self { path: path.to_path_buf(), tmp, out: std::io::BufWriter::new(file) })
    }

    pub fn line(&mut self, line: &str) -> Result<()> {
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n").with_context(|| format!("cannot write {}", self.tmp.display()))
    }

    pub fn commit(mut self) -> Result<()> {
        self.out.flush().with_context(|| format!("cannot write {}", self.tmp.display()))?;
        drop(self.out);
        std::fs::rename(&self.tmp, &self.path).with_context(|| format!("renaming {}", self.tmp.display()))
    }
}

/// Writes `lines` to `path` through a temporary file and a rename.
pub fn write_lines<S: AsRef<str>>(path: &Path, lines: impl Iterator<Item = S>) -> Result<()> {
    let mut out = JsonlWriter::create(path)?;
    for l in lines {
        out.line(l.as_ref())?;
    }
    out.commit()
}
