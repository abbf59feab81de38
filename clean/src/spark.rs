//! The executor side of `clean/spark/dedup.py`, which streams each partition through
//! `gptlab-clean sign` and `gptlab-clean annotate` with `RDD.pipe`, so the shingling, MinHash and
//! JSON handling on Spark are this crate's code, the same as `gptlab clean dedup` runs.
//!
//! Both read tab-separated lines whose first field is the record's key (its position in input
//! order) and whose last is the record's line as read; JSON escapes tabs inside strings, so the
//! split is unambiguous.

use std::io::{BufRead, Write};

use anyhow::{Context, Result};
use rayon::prelude::*;
use serde_json::Value;
use xxhash_rust::xxh3::xxh3_128;

use crate::dedup::{record_name, with_duplicate_of, DedupOptions};
use crate::minhash::{shingle_hashes, shingles, MinHasher};
use crate::records::{parse_fields, Fields};

/// Lines per parallel batch.
const BATCH: usize = 4096;

/// What `sign` writes for one record.
fn sign_line(line: &str, opts: &DedupOptions, hasher: &MinHasher, with_shingles: bool) -> Result<String> {
    let mut parts = line.splitn(3, '\t');
    let (Some(key), Some(at), Some(raw)) = (parts.next(), parts.next(), parts.next()) else {
        anyhow::bail!(
            "sign reads key<TAB>path:line<TAB>record lines, got {:?}",
            line.chars().take(80).collect::<String>()
        );
    };
    let Fields { text, id } = match parse_fields(raw, &opts.field, Some(&opts.id_field), || at.to_string()) {
        Ok(f) => f,
        Err(e) => return Ok(format!("{key}\t!\t{}", format!("{e:#}").replace(['\t', '\n'], " "))),
    };
    // Sorted and distinct only where the shingles are written out for verification.
    let set = if with_shingles { shingles(&text, opts.ngram) } else { shingle_hashes(&text, opts.ngram) };
    let mut out = format!("{key}\t{}\t{:032x}\t", record_name(id, at), xxh3_128(text.as_bytes()));
    hasher.signature(&set).iter().for_each(|v| out.push_str(&format!("{v:08x}")));
    out.push('\t');
    if with_shingles {
        out.push_str(&set.iter().map(|h| format!("{h:x}")).collect::<Vec<_>>().join(","));
    }
    Ok(out)
}

/// Applies `f` to every line of `input` in parallel batches, writing its results in input order.
fn stream(input: impl BufRead, mut out: impl Write, f: impl Fn(&str) -> Result<String> + Sync) -> Result<()> {
    let mut lines = input.lines();
    loop {
        let batch: Vec<String> = lines.by_ref().take(BATCH).collect::<std::io::Result<_>>()?;
        if batch.is_empty() {
            return out.flush().context("writing the output");
        }
        let done: Vec<Result<String>> = batch.par_iter().map(|l| f(l)).collect();
        for l in done {
            writeln!(out, "{}", l?)?;
        }
    }
}

/// `key<TAB>path:line<TAB>record` in, and out either `key<TAB>name<TAB>text hash<TAB>signature
/// <TAB>shingles` (the name `duplicate_of` would give the record, as JSON; the xxh3-128 of its
/// text; its MinHash signature, eight hex digits a value; its shingle hashes, only with
/// `with_shingles`) or, for a record that does not parse, `key<TAB>!<TAB>path:line: error`.
pub fn sign(input: impl BufRead, out: impl Write, opts: &DedupOptions, with_shingles: bool) -> Result<()> {
    let hasher = MinHasher::new(opts.num_perm, opts.seed);
    stream(input, out, |l| sign_line(l, opts, &hasher, with_shingles))
}

/// `key<TAB>name<TAB>record` in, `key<TAB>record with "duplicate_of": name` out.
pub fn annotate(input: impl BufRead, out: impl Write) -> Result<()> {
    stream(input, out, |line| {
        let mut parts = line.splitn(3, '\t');
        let (Some(key), Some(name), Some(raw)) = (parts.next(), parts.next(), parts.next()) else {
            anyhow::bail!("annotate reads key<TAB>name<TAB>record lines");
        };
        let name: Value = serde_json::from_str(name).context("annotate: the name is not JSON")?;
        Ok(format!("{key}\t{}", with_duplicate_of(raw, &name)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_writes_what_the_single_machine_clusterer_hashes() {
        let opts = DedupOptions::default();
        let input = "7\ta.jsonl:3\t{\"text\":\"one two three four five six\",\"id\":\"x\"}\n\
                     8\ta.jsonl:4\t{\"text\":\"six\"}\n9\ta.jsonl:5\t{\"text\":1}\n";
        let mut out = Vec::new();
        sign(input.as_bytes(), &mut out, &opts, true).unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
        assert_eq!(lines[0][..2], ["7", "\"x\""]);
        assert_eq!(lines[1][..2], ["8", "\"a.jsonl:4\""]);
        let text = "one two three four five six";
        assert_eq!(lines[0][2], format!("{:032x}", xxh3_128(text.as_bytes())));
        let sig = MinHasher::new(128, 1).signature(&shingles(text, 5));
        assert_eq!(lines[0][3], sig.iter().map(|v| format!("{v:08x}")).collect::<String>());
        assert_eq!(lines[0][4].split(',').count(), 2);
        assert_eq!(lines[2], ["9", "!", "a.jsonl:5: no \"text\" string (--field names the text)"]);
        let mut annotated = Vec::new();
        annotate("4\t\"x\"\t{\"b\":1.50, \"a\":2}\n".as_bytes(), &mut annotated).unwrap();
        assert_eq!(String::from_utf8(annotated).unwrap(), "4\t{\"b\":1.50, \"a\":2,\"duplicate_of\":\"x\"}\n");
    }
}
