//! The records the cleaning stages read and write: JSONL files (a file, or every `*.jsonl` under a
//! folder, in path order), each record with its file and line, outputs written through a
//! temporary file and a rename.

use std::borrow::Cow;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// One input record: its line as read, and its parsed value.
pub struct Doc {
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

/// A record parsed from its line; `at` names the line (`path:line`) in errors.
pub fn parse(raw: &str, field: &str, at: &str) -> Result<Value> {
    let value: Value = serde_json::from_str(raw).map_err(|e| anyhow::anyhow!("{at}: malformed JSON: {e}"))?;
    if !value.get(field).is_some_and(Value::is_string) {
        bail!("{at}: no \"{field}\" string (--field names the text)");
    }
    Ok(value)
}

/// The two fields deduplication reads from a record: its text and (when asked for) its id.
pub struct Fields<'a> {
    pub text: Cow<'a, str>,
    pub id: Option<Value>,
}

/// A record's text field (and its id field when `id_field` is given), parsed without building
/// the rest of the record: other fields are checked for syntax and skipped, and a text without
/// escapes is borrowed from the line. Errors read as [`parse`]'s; numbers in skipped fields are checked
/// for syntax only. `at` names the line (`path:line`) and is only called for an error.
pub fn parse_fields<'a>(
    raw: &'a str,
    field: &str,
    id_field: Option<&str>,
    at: impl Fn() -> String,
) -> Result<Fields<'a>> {
    let mut de = serde_json::Deserializer::from_str(raw);
    let found = FieldsSeed { field, id_field }
        .deserialize(&mut de)
        .and_then(|f| de.end().map(|()| f))
        .map_err(|e| anyhow::anyhow!("{}: malformed JSON: {e}", at()))?;
    match found {
        (Some(Some(text)), id) => Ok(Fields { text, id: id.filter(|v| !v.is_null()) }),
        _ => bail!("{}: no \"{field}\" string (--field names the text)", at()),
    }
}

/// Visits a record, keeping the text field (`None` when absent, `Some(None)` when not a string)
/// and the id field's value; the last of repeated keys wins, as in `serde_json::Value`.
struct FieldsSeed<'f> {
    field: &'f str,
    id_field: Option<&'f str>,
}

type Found<'de> = (Option<Option<Cow<'de, str>>>, Option<Value>);

impl<'de> DeserializeSeed<'de> for FieldsSeed<'_> {
    type Value = Found<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldsSeed<'_> {
    type Value = Found<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON record")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let (mut text, mut id) = (None, None);
        while let Some(MaybeStr(key)) = map.next_key::<MaybeStr<'de>>()? {
            let key = key.unwrap_or_default();
            let is_id = self.id_field == Some(key.as_ref());
            if key == self.field && is_id {
                let v: Value = map.next_value()?;
                text = Some(v.as_str().map(|s| Cow::Owned(s.to_string())));
                id = Some(v);
            } else if key == self.field {
                text = Some(map.next_value::<MaybeStr<'de>>()?.0);
            } else if is_id {
                id = Some(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok((text, id))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok((None, None))
    }
    fn visit_bool<E>(self, _: bool) -> std::result::Result<Self::Value, E> {
        Ok((None, None))
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<Self::Value, E> {
        Ok((None, None))
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<Self::Value, E> {
        Ok((None, None))
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<Self::Value, E> {
        Ok((None, None))
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<Self::Value, E> {
        Ok((None, None))
    }
    fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
        Ok((None, None))
    }
}

/// A string, borrowed from the line when it has no escapes, or `None` for any other value.
struct MaybeStr<'de>(Option<Cow<'de, str>>);

impl<'de> serde::Deserialize<'de> for MaybeStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(MaybeStr(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(MaybeStr(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeStr(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeStr(None))
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
            fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
                Ok(MaybeStr(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// Calls `f` with every non-blank line of `files` in order (its file's index, its line number
/// from 1 with blank lines counted, its text), reading through one reused buffer, so a pass over
/// a corpus holds one line at a time rather than the corpus.
pub fn for_each_line(files: &[PathBuf], mut f: impl FnMut(usize, usize, &str) -> Result<()>) -> Result<()> {
    let mut buf = Vec::new();
    for (file, path) in files.iter().enumerate() {
        let mut reader = BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?,
        );
        for line in 1.. {
            buf.clear();
            if reader.read_until(b'\n', &mut buf).with_context(|| format!("reading {}", path.display()))? == 0 {
                break;
            }
            let bytes = buf.strip_suffix(b"\n").unwrap_or(&buf);
            let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
            let text =
                std::str::from_utf8(bytes).map_err(|e| anyhow::anyhow!("{}:{line}: not UTF-8: {e}", path.display()))?;
            if !text.trim().is_empty() {
                f(file, line, text)?;
            }
        }
    }
    Ok(())
}

/// Every record of `files`, parsed in parallel; the first bad line, in input order, is the error.
pub fn read_docs(files: &[PathBuf], field: &str) -> Result<Vec<Doc>> {
    let mut docs = Vec::new();
    for_each_batch(files, field, |_, batch| {
        docs.extend(batch);
        Ok(())
    })?;
    ensure!(!docs.is_empty(), "no records in the input");
    Ok(docs)
}

/// The text field of every record of `input` (a file or a folder).
pub fn read_texts(input: &Path, field: &str) -> Result<Vec<String>> {
    let docs = read_docs(&input_files(input)?, field)?;
    Ok(docs.into_iter().map(|d| d.value[field].as_str().unwrap_or_default().to_string()).collect())
}

/// Records per parallel batch when streaming: enough to keep every core busy, few enough that
/// a batch is a small share of memory and the memory of one batch is reused by the next.
const BATCH: usize = 1 << 12;

/// A non-blank input line: its file's index in the file list, its line number (from 1, blank
/// lines counted) and its text.
pub type Line = (usize, usize, String);

/// Calls `f` with consecutive batches of up to [`BATCH`] non-blank lines of `files`, in order.
/// The next batch is read on a thread of its own while `f` works on the current one, so reading
/// does not leave the cores idle; a read error reaches the caller after every line before it,
/// so the first bad line in input order is the one reported.
pub fn for_each_line_batch(files: &[PathBuf], mut f: impl FnMut(&[Line]) -> Result<()>) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<Line>>>(1);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut batch: Vec<Line> = Vec::with_capacity(BATCH);
            let read = for_each_line(files, |file, line, raw| {
                batch.push((file, line, raw.to_string()));
                if batch.len() == BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    // A closed channel means `f` failed: stop reading.
                    tx.send(Ok(full)).map_err(|_| anyhow::anyhow!("the batch consumer stopped"))?;
                }
                Ok(())
            });
            // The lines before the end, or before a read error, come first, so an earlier bad
            // record is reported before the read error.
            if tx.send(Ok(batch)).is_ok() {
                if let Err(e) = read {
                    let _ = tx.send(Err(e));
                }
            }
        });
        for batch in rx {
            let batch = batch?;
            if !batch.is_empty() {
                f(&batch)?;
            }
        }
        Ok(())
    })
}

/// Calls `f` with consecutive batches of the records of `files`, parsed in parallel, and the
/// input position of each batch's first record; the first bad line in input order is the error.
pub fn for_each_batch(files: &[PathBuf], field: &str, mut f: impl FnMut(usize, Vec<Doc>) -> Result<()>) -> Result<()> {
    use rayon::prelude::*;
    let mut done = 0;
    for_each_line_batch(files, |batch| {
        let docs: Vec<Result<Doc>> = batch
            .par_iter()
            .map(|(file, line, raw)| {
                let value = parse(raw, field, &format!("{}:{line}", files[*file].display()))?;
                Ok(Doc { raw: raw.clone(), value })
            })
            .collect();
        let docs = docs.into_iter().collect::<Result<Vec<Doc>>>()?;
        let n = docs.len();
        f(done, docs)?;
        done += n;
        Ok(())
    })
}

/// The JSONL files of `input` and their record count, every line checked to be a record with a
/// `field` string before a streaming stage writes anything; the first bad line in input order is
/// the error.
pub fn checked_input(input: &Path, field: &str) -> Result<(Vec<PathBuf>, usize)> {
    let files = input_files(input)?;
    let mut n = 0;
    for_each_batch(&files, field, |_, docs| {
        n += docs.len();
        Ok(())
    })?;
    ensure!(n > 0, "no records in the input");
    Ok((files, n))
}

/// A JSONL file written line by line into a temporary file, which `commit` renames into place;
/// dropped uncommitted (a failed run), it deletes the temporary file, so nothing half written
/// is left.
pub struct JsonlWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<std::io::BufWriter<std::fs::File>>,
}

impl JsonlWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let tmp = path.with_extension("jsonl.tmp");
        let file = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(Self { path: path.to_path_buf(), tmp, out: Some(std::io::BufWriter::with_capacity(1 << 20, file)) })
    }

    pub fn line(&mut self, line: &str) -> Result<()> {
        let out = self.out.as_mut().context("writing to a committed file")?;
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n").with_context(|| format!("cannot write {}", self.tmp.display()))
    }

    pub fn commit(mut self) -> Result<()> {
        let mut out = self.out.take().context("committing twice")?;
        out.flush().with_context(|| format!("cannot write {}", self.tmp.display()))?;
        drop(out);
        std::fs::rename(&self.tmp, &self.path).with_context(|| format!("renaming {}", self.tmp.display()))
    }
}

impl Drop for JsonlWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_fields_reads_the_text_and_id_as_a_full_parse_would() {
        let at = || "f.jsonl:3".to_string();
        let f = parse_fields(r#"{"id":7,"meta":{"x":[1,2.5e3,null]},"text":"plain"}"#, "text", Some("id"), at).unwrap();
        assert!(matches!(f.text, Cow::Borrowed("plain")));
        assert_eq!(f.id, Some(serde_json::json!(7)));
        // Escapes are decoded; a repeated key's last value wins; a null id is no id.
        let f = parse_fields(r#"{"text":"old","text":"a\nb \u00e9","id":null}"#, "text", Some("id"), at).unwrap();
        assert_eq!((f.text.as_ref(), f.id), ("a\nb é", None));
        // The text field may be the id field too.
        let f = parse_fields(r#"{"text":"t"}"#, "text", Some("text"), at).unwrap();
        assert_eq!((f.text.as_ref(), f.id), ("t", Some(serde_json::json!("t"))));
        for (line, reason) in [
            (r#"{"text":3}"#, "no \"text\" string"),
            (r#"{"body":"x"}"#, "no \"text\" string"),
            (r#"["text"]"#, "no \"text\" string"),
            (r#"{"text":"x"} trailing"#, "malformed JSON"),
            (r#"{"text":"x","a":[1,}"#, "malformed JSON"),
        ] {
            let err = parse_fields(line, "text", None, at).err().unwrap().to_string();
            assert!(err.starts_with(&format!("f.jsonl:3: {reason}")), "{line}: {err}");
            // The same message as a full parse.
            assert_eq!(err, parse(line, "text", "f.jsonl:3").err().unwrap().to_string(), "{line}");
        }
    }

    #[test]
    fn batches_come_in_order_and_a_read_error_follows_the_batches_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let mut bytes: Vec<u8> =
            (1..=BATCH + 500).flat_map(|i| format!("{{\"text\":\"{i}\"}}\n").into_bytes()).collect();
        bytes.extend_from_slice(b"{\"text\":\"\xff\"}\n");
        std::fs::write(&path, bytes).unwrap();
        let files = vec![path];
        let mut seen = Vec::new();
        let err = for_each_line_batch(&files, |batch| {
            seen.push((batch.len(), batch[0].1));
            Ok(())
        })
        .unwrap_err()
        .to_string();
        // The full batch and the 500 lines before the bad one, then the bad line's error.
        assert_eq!(seen, vec![(BATCH, 1), (500, BATCH + 1)]);
        assert!(err.contains(&format!("a.jsonl:{}: not UTF-8", BATCH + 501)), "{err}");
        // A failing consumer stops the reader, and its error is the one returned.
        let mut calls = 0;
        let err = for_each_line_batch(&files, |_| {
            calls += 1;
            anyhow::bail!("consumer failed")
        })
        .unwrap_err();
        assert_eq!((calls, err.to_string()), (1, "consumer failed".to_string()));
    }
}
