//! GPT-3's decontamination (Brown et al. 2020, appendix C): a training document that shares a
//! 13-gram with any evaluation document loses that 13-gram and 200 characters either side; what
//! is left falls into pieces, pieces under 200 characters are dropped, and a document cut into
//! more than 10 pieces is dropped whole.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{ensure, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;
use xxhash_rust::xxh3::xxh3_64;

use super::records::{checked_input, for_each_batch, JsonlWriter};

/// GPT-3's settings.
#[derive(Clone, Debug, Serialize)]
pub struct DecontaminateOptions {
    pub ngram: usize,
    /// Characters removed either side of an overlapping n-gram.
    pub window: usize,
    /// Pieces shorter than this are dropped.
    pub min_piece: usize,
    /// Documents cut into more pieces than this are dropped whole.
    pub max_pieces: usize,
    pub field: String,
}

impl Default for DecontaminateOptions {
    fn default() -> Self {
        Self { ngram: 13, window: 200, min_piece: 200, max_pieces: 10, field: "text".into() }
    }
}

/// Lowercased words with their byte spans, punctuation trimmed from their ends; words of
/// punctuation alone are skipped.
fn words(text: &str) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    for w in text.split_whitespace() {
        let start = at + text[at..].find(w).unwrap_or(0);
        at = start + w.len();
        let trimmed = w.trim_matches(|c: char| !c.is_alphanumeric());
        if !trimmed.is_empty() {
            out.push((trimmed.to_lowercase(), start, at));
        }
    }
    out
}

fn ngram_hashes(words: &[(String, usize, usize)], n: usize) -> impl Iterator<Item = (usize, u64)> + '_ {
    words.windows(n).enumerate().map(|(i, w)| {
        let joined = w.iter().map(|x| x.0.as_str()).collect::<Vec<_>>().join(" ");
        (i, xxh3_64(joined.as_bytes()))
    })
}

/// The n-grams of the evaluation documents, each with the tasks it comes from.
pub struct EvalNgrams {
    n: usize,
    owners: HashMap<u64, Vec<usize>>,
    tasks: Vec<String>,
}

impl EvalNgrams {
    /// From (task name, document texts) pairs.
    pub fn new(tasks: &[(String, Vec<String>)], n: usize) -> Self {
        let mut owners: HashMap<u64, Vec<usize>> = HashMap::new();
        for (t, (_, docs)) in tasks.iter().enumerate() {
            for d in docs {
                for (_, h) in ngram_hashes(&words(d), n) {
                    let o = owners.entry(h).or_default();
                    if o.last() != Some(&t) {
                        o.push(t);
                    }
                }
            }
        }
        Self { n, owners, tasks: tasks.iter().map(|t| t.0.clone()).collect() }
    }

    /// From the harness's tasks (built-in names or lm-eval task files): each evaluation
    /// document's text followed by its target.
    pub fn from_tasks(specs: &[String], n: usize) -> Result<Self> {
        let mut tasks = Vec::new();
        for spec in specs {
            let task = crate::eval::load_task(spec)?;
            let docs = task
                .docs
                .iter()
                .map(|d| Ok(format!("{} {}", task.text(d)?, task.target_text(d)?)))
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("task {spec}"))?;
            tasks.push((task.name().to_string(), docs));
        }
        Ok(Self::new(&tasks, n))
    }
}

/// What happened to one document.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Clean,
    /// The pieces kept (each at least `min_piece` characters), and the tasks overlapped.
    Pieces(Vec<String>, Vec<String>),
    /// Dropped whole: cut into more than `max_pieces`, or nothing long enough left.
    Dropped(Vec<String>),
}

/// GPT-3's rule applied to one text.
pub fn decontaminate_text(text: &str, eval: &EvalNgrams, opts: &DecontaminateOptions) -> Verdict {
    let w = words(text);
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut tasks: Vec<usize> = Vec::new();
    for (i, h) in ngram_hashes(&w, eval.n) {
        if let Some(owners) = eval.owners.get(&h) {
            let (start, end) = (w[i].1, w[i + eval.n - 1].2);
            spans.push((start.saturating_sub(opts.window), (end + opts.window).min(text.len())));
            tasks.extend(owners);
        }
    }
    if spans.is_empty() {
        return Verdict::Clean;
    }
    tasks.sort_unstable();
    tasks.dedup();
    let names = tasks.iter().map(|&t| eval.tasks[t].clone()).collect();
    // Spans are in order of their n-grams, so their starts never decrease.
    let mut pieces = Vec::new();
    let mut at = 0;
    for (start, end) in spans {
        if start > at {
            pieces.push(&text[floor_char(text, at)..floor_char(text, start)]);
        }
        at = at.max(end);
    }
    pieces.push(&text[floor_char(text, at)..]);
    let raw_pieces = pieces.iter().filter(|p| !p.trim().is_empty()).count();
    let kept: Vec<String> =
        pieces.into_iter().map(str::trim).filter(|p| p.chars().count() >= opts.min_piece).map(str::to_string).collect();
    if raw_pieces > opts.max_pieces || kept.is_empty() {
        Verdict::Dropped(names)
    } else {
        Verdict::Pieces(kept, names)
    }
}

/// The largest char boundary at or before `i`.
fn floor_char(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// What `decontaminate` writes to `stats.json`.
#[derive(Clone, Debug, Serialize)]
pub struct DecontaminateStats {
    pub documents: usize,
    pub clean: usize,
    /// Documents cut into pieces, and the pieces they became.
    pub cut: usize,
    pub pieces: usize,
    pub dropped: usize,
    /// Documents that overlapped each task.
    pub per_task: BTreeMap<String, usize>,
    pub eval_ngrams: usize,
    pub options: DecontaminateOptions,
}

/// Decontaminates the records of `input` against `eval` into `out`, streaming: `kept.jsonl`
/// (clean records as read, and each piece of a cut one as a copy with its text and `piece`),
/// `removed.jsonl` (dropped records with `contaminated_by`), and `stats.json`. The input is
/// checked whole first, so a bad line stops it before anything is written.
pub fn decontaminate(
    input: &Path,
    out: &Path,
    eval: &EvalNgrams,
    opts: &DecontaminateOptions,
) -> Result<DecontaminateStats> {
    ensure!(opts.ngram == eval.n, "the evaluation n-grams were built for n = {}, not {}", eval.n, opts.ngram);
    ensure!(opts.ngram > 0 && opts.max_pieces > 0, "--ngram and --max-pieces must be positive");
    let (files, documents) = checked_input(input, &opts.field)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut kept = JsonlWriter::create(&out.join("kept.jsonl"))?;
    let mut removed = JsonlWriter::create(&out.join("removed.jsonl"))?;
    let mut per_task: BTreeMap<String, usize> = BTreeMap::new();
    let (mut clean, mut cut, mut pieces, mut dropped) = (0, 0, 0, 0);
    for_each_batch(&files, &opts.field, |_, docs| {
        let verdicts: Vec<Verdict> = docs
            .par_iter()
            .map(|d| decontaminate_text(d.value[&opts.field].as_str().unwrap_or_default(), eval, opts))
            .collect();
        for (d, v) in docs.iter().zip(&verdicts) {
            match v {
                Verdict::Clean => {
                    clean += 1;
                    kept.line(&d.raw)?;
                }
                Verdict::Pieces(ps, tasks) => {
                    cut += 1;
                    pieces += ps.len();
                    for (k, p) in ps.iter().enumerate() {
                        let mut r = d.value.clone();
                        r[&opts.field] = Value::String(p.clone());
                        r["piece"] = k.into();
                        r["contaminated_by"] = tasks.clone().into();
                        kept.line(&r.to_string())?;
                    }
                    tasks.iter().for_each(|t| *per_task.entry(t.clone()).or_default() += 1);
                }
                Verdict::Dropped(tasks) => {
                    dropped += 1;
                    let mut r = d.value.clone();
                    r["contaminated_by"] = tasks.clone().into();
                    removed.line(&r.to_string())?;
                    tasks.iter().for_each(|t| *per_task.entry(t.clone()).or_default() += 1);
                }
            }
        }
        Ok(())
    })?;
    kept.commit()?;
    removed.commit()?;
    let stats = DecontaminateStats {
        documents,
        clean,
        cut,
        pieces,
        dropped,
        per_task,
        eval_ngrams: eval.owners.len(),
        options: opts.clone(),
    };
    std::fs::write(out.join("stats.json"), serde_json::to_string_pretty(&stats)? + "\n")
        .with_context(|| format!("writing {}", out.join("stats.json").display()))?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> DecontaminateOptions {
        DecontaminateOptions { ngram: 3, window: 5, min_piece: 10, max_pieces: 2, ..Default::default() }
    }

    #[test]
    fn an_overlapping_ngram_and_its_window_are_cut_out() {
        let eval = EvalNgrams::new(&[("quiz".into(), vec!["The Cat sat down.".into()])], 3);
        // "cat, SAT down!" matches "cat sat down" whatever the case and punctuation. It spans
        // bytes 24..38; with 5 characters either side, 19..43 goes, mid-word as in GPT-3.
        let text = "a long first part here, cat, SAT down! and a long last part";
        assert_eq!(&text[24..38], "cat, SAT down!");
        let v = decontaminate_text(text, &eval, &opts());
        assert_eq!(
            v,
            Verdict::Pieces(vec!["a long first part h".into(), "a long last part".into()], vec!["quiz".into()])
        );
        assert_eq!(decontaminate_text("a cat sat up and nothing else matches", &eval, &opts()), Verdict::Clean);
    }

    #[test]
    fn short_pieces_are_dropped_and_many_pieces_drop_the_document() {
        let eval = EvalNgrams::new(&[("quiz".into(), vec!["one two three".into()])], 3);
        // Everything left is under 10 characters: dropped.
        assert_eq!(decontaminate_text("x one two three y", &eval, &opts()), Verdict::Dropped(vec!["quiz".into()]));
        // Three pieces against a maximum of two: dropped, though each piece is long enough.
        let text = "aaaaaaaaaaaa one two three bbbbbbbbbbbb one two three cccccccccccc";
        assert_eq!(decontaminate_text(text, &eval, &opts()), Verdict::Dropped(vec!["quiz".into()]));
    }
}
