//! Text corpora on disk: a directory with `train.jsonl` and `val.jsonl`, one JSON object with a
//! string field "text" per line. The synthetic generator and the importer of the user's own
//! files both write this layout, so everything downstream reads one format.

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};

use crate::data::split::in_val_split;
use crate::jsonl::write_jsonl;
use std::path::{Path, PathBuf};

/// The `kind` of every imported document.
const IMPORT_KIND: &str = "import";

/// The texts of `dir/{split}.jsonl`; a split without documents is an error, since nothing can
/// train or evaluate on it.
pub fn read_split(dir: &Path, split: &str) -> Result<Vec<String>> {
    let texts = read_jsonl_texts(&dir.join(format!("{split}.jsonl")))?;
    ensure!(!texts.is_empty(), "corpus {}: {split}.jsonl has no documents", dir.display());
    Ok(texts)
}

/// The "text" field of every non-blank line of a JSONL file. Errors name `{path}:{line}` so a
/// bad line in a large file is easy to find.
pub fn read_jsonl_texts(path: &Path) -> Result<Vec<String>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut texts = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let at = || format!("{}:{}", path.display(), i + 1);
        let line = line.map_err(|e| anyhow!("{}: cannot read line: {e}", at()))?;
        if line.trim().is_empty() {
            continue;
        }
        texts.push(text_field(&line).map_err(|e| anyhow!("{}: {e}", at()))?);
    }
    Ok(texts)
}

fn text_field(line: &str) -> Result<String, String> {
    match serde_json::from_str::<Value>(line) {
        Err(e) => Err(format!("malformed JSON: {e}")),
        Ok(Value::Object(mut object)) => match object.remove("text") {
            Some(Value::String(text)) => Ok(text),
            Some(_) => Err("\"text\" is not a string".to_string()),
            None => Err("missing \"text\" field".to_string()),
        },
        Ok(_) => Err("expected a JSON object with a \"text\" field".to_string()),
    }
}

/// How a .txt file becomes documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxtMode {
    /// The whole file is one document.
    WholeFile,
    /// Every block of lines between blank lines is a document (paragraphs, poems, records).
    Blocks,
}

/// Settings of [`import`].
#[derive(Clone, Debug, PartialEq)]
pub struct ImportOptions {
    /// About this fraction of documents goes to val.jsonl, chosen by a hash of the text.
    pub val_fraction: f64,
    pub txt_mode: TxtMode,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions { val_fraction: 0.05, txt_mode: TxtMode::Blocks }
    }
}

/// What [`import`] read and wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportStats {
    pub files: usize,
    pub train_docs: usize,
    pub val_docs: usize,
}

#[derive(Serialize)]
struct ImportedDoc<'a> {
    kind: &'static str,
    text: &'a str,
}

fn imported(texts: &[String]) -> Vec<ImportedDoc<'_>> {
    texts.iter().map(|text| ImportedDoc { kind: IMPORT_KIND, text }).collect()
}

/// The input formats `import` reads, by file extension.
#[derive(Clone, Copy)]
enum Format {
    Txt,
    Jsonl,
}

impl Format {
    fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "txt" => Some(Format::Txt),
            "jsonl" => Some(Format::Jsonl),
            _ => None,
        }
    }
}

/// Turns the user's own text into a corpus: reads .txt and .jsonl files (directories are
/// searched recursively in sorted order, other files there are skipped), drops blank
/// documents, and writes `out/train.jsonl` and `out/val.jsonl` split by text hash, so the
/// same inputs always give the same corpus.
pub fn import(inputs: &[PathBuf], out: &Path, opts: &ImportOptions) -> Result<ImportStats> {
    ensure!((0.0..1.0).contains(&opts.val_fraction), "val_fraction must be in [0, 1), got {}", opts.val_fraction);
    let mut files = Vec::new();
    for input in inputs {
        collect_files(input, &mut files)?;
    }
    let mut train = Vec::new();
    let mut val = Vec::new();
    for (path, format) in &files {
        let texts = match format {
            Format::Jsonl => read_jsonl_texts(path)?,
            Format::Txt => {
                let content = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                match opts.txt_mode {
                    TxtMode::WholeFile => vec![content.trim().to_string()],
                    TxtMode::Blocks => blocks(&content),
                }
            }
        };
        for text in texts.into_iter().filter(|t| !t.trim().is_empty()) {
            match in_val_split(&text, opts.val_fraction) {
                true => val.push(text),
                false => train.push(text),
            }
        }
    }
    if train.is_empty() && val.is_empty() {
        let names: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
        bail!("no documents found in {}", names.join(", "));
    }
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write_jsonl(&out.join("train.jsonl"), &imported(&train))?;
    write_jsonl(&out.join("val.jsonl"), &imported(&val))?;
    Ok(ImportStats { files: files.len(), train_docs: train.len(), val_docs: val.len() })
}

/// Adds `input` (a .txt or .jsonl file) or the readable files under it (a directory) to
/// `files`. Symbolic links to directories are not followed, so cycles cannot recurse forever.
fn collect_files(input: &Path, files: &mut Vec<(PathBuf, Format)>) -> Result<()> {
    let meta = fs::metadata(input).with_context(|| format!("cannot read input {}", input.display()))?;
    if !meta.is_dir() {
        let format = Format::of(input).ok_or_else(|| {
            anyhow!("unsupported input {}: expected a .txt or .jsonl file or a directory", input.display())
        })?;
        files.push((input.to_path_buf(), format));
        return Ok(());
    }
    let listing = || format!("cannot list {}", input.display());
    let mut entries =
        fs::read_dir(input).with_context(listing)?.collect::<std::io::Result<Vec<_>>>().with_context(listing)?;
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if entry.file_type().with_context(listing)?.is_dir() {
            collect_files(&path, files)?;
        } else if let Some(format) = Format::of(&path) {
            files.push((path, format));
        }
    }
    Ok(())
}

/// The blank-line-separated blocks of `content`, each with its lines joined by "\n".
fn blocks(content: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in content.lines() {
        if !line.trim().is_empty() {
            current.push(line);
        } else if !current.is_empty() {
            blocks.push(current.join("\n"));
            current.clear();
        }
    }
    if !current.is_empty() {
        blocks.push(current.join("\n"));
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::tempdir;

    fn all_texts(dir: &Path) -> Vec<String> {
        let mut texts = read_jsonl_texts(&dir.join("train.jsonl")).unwrap();
        texts.extend(read_jsonl_texts(&dir.join("val.jsonl")).unwrap());
        texts.sort();
        texts
    }

    #[test]
    fn txt_imports_as_blocks_or_whole_files() {
        let tmp = tempdir().unwrap();
        let input = tmp.path().join("poem.txt");
        fs::write(&input, "first line\nsecond line\n\n  \nthird\r\n\r\nfourth\n").unwrap();
        let out = tmp.path().join("blocks");
        let opts = ImportOptions { val_fraction: 0.0, txt_mode: TxtMode::Blocks };
        let stats = import(std::slice::from_ref(&input), &out, &opts).unwrap();
        assert_eq!(stats, ImportStats { files: 1, train_docs: 3, val_docs: 0 });
        assert_eq!(read_split(&out, "train").unwrap(), ["first line\nsecond line", "third", "fourth"]);
        let line = fs::read_to_string(out.join("train.jsonl")).unwrap();
        assert!(line.starts_with(r#"{"kind":"import","text":"first line\nsecond line"}"#));

        let whole = tmp.path().join("whole");
        let opts = ImportOptions { txt_mode: TxtMode::WholeFile, ..opts };
        import(&[input], &whole, &opts).unwrap();
        assert_eq!(all_texts(&whole).len(), 1);
        assert!(all_texts(&whole)[0].starts_with("first line\nsecond line\n\n"));
    }

    #[test]
    fn directories_are_searched_recursively_for_txt_and_jsonl() {
        let tmp = tempdir().unwrap();
        let data = tmp.path().join("data");
        fs::create_dir_all(data.join("nested")).unwrap();
        fs::write(data.join("a.txt"), "alpha\n\nbeta\n").unwrap();
        fs::write(data.join("nested/b.jsonl"), "{\"text\": \"gamma\", \"id\": 1}\n\n{\"text\": \"delta\"}\n").unwrap();
        fs::write(data.join("notes.md"), "skipped").unwrap();
        let out = tmp.path().join("out");
        let opts = ImportOptions { val_fraction: 0.5, ..ImportOptions::default() };
        let stats = import(&[data], &out, &opts).unwrap();
        assert_eq!(stats.files, 2);
        assert_eq!(stats.train_docs + stats.val_docs, 4);
        assert_eq!(all_texts(&out), ["alpha", "beta", "delta", "gamma"]);
    }

    #[test]
    fn import_rejects_empty_and_unsupported_inputs() {
        let tmp = tempdir().unwrap();
        let blank = tmp.path().join("blank.txt");
        fs::write(&blank, "\n  \n").unwrap();
        let out = tmp.path().join("out");
        let err = import(&[blank], &out, &ImportOptions::default()).unwrap_err();
        assert!(err.to_string().starts_with("no documents found in "), "{err}");
        let md = tmp.path().join("x.md");
        fs::write(&md, "text").unwrap();
        let err = import(&[md], &out, &ImportOptions::default()).unwrap_err();
        assert!(err.to_string().contains("unsupported input"), "{err}");
        let missing = tmp.path().join("missing.txt");
        let err = import(&[missing], &out, &ImportOptions::default()).unwrap_err();
        assert!(err.to_string().contains("missing.txt"), "{err}");
    }

    #[test]
    fn malformed_lines_are_reported_with_file_and_line() {
        let tmp = tempdir().unwrap();
        let path = tmp.path().join("bad.jsonl");
        let cases = [
            ("{\"text\": \"ok\"}\n\n{\"text\": oops}\n", ":3: malformed JSON"),
            ("{\"text\": \"ok\"}\n{\"body\": \"x\"}\n", ":2: missing \"text\""),
            ("{\"text\": 5}\n", ":1: \"text\" is not a string"),
            ("[1, 2]\n", ":1: expected a JSON object"),
        ];
        for (content, expected) in cases {
            fs::write(&path, content).unwrap();
            let err = read_jsonl_texts(&path).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{}{expected}", path.display())), "{err}");
        }
        let err = read_jsonl_texts(&tmp.path().join("none.jsonl")).unwrap_err();
        assert!(err.to_string().contains("none.jsonl"), "{err}");
    }

    #[test]
    fn empty_split_is_an_error_naming_it() {
        let tmp = tempdir().unwrap();
        fs::write(tmp.path().join("val.jsonl"), "\n").unwrap();
        let err = read_split(tmp.path(), "val").unwrap_err().to_string();
        assert_eq!(err, format!("corpus {}: val.jsonl has no documents", tmp.path().display()));
    }

    #[test]
    fn write_then_read_round_trips_escapes() {
        let tmp = tempdir().unwrap();
        let path = tmp.path().join("x.jsonl");
        let docs = [ImportedDoc { kind: IMPORT_KIND, text: "a \"quoted\"\nline\twith ünïcode" }];
        write_jsonl(&path, &docs).unwrap();
        assert_eq!(read_jsonl_texts(&path).unwrap(), [docs[0].text]);
    }
}
