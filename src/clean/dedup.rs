//! `gptlab clean dedup`: exact duplicates by a hash of the text, near duplicates by MinHash LSH
//! over word n-grams, clustered with union-find; each cluster keeps the document that comes
//! first in input order (files by path, then line), so the result depends neither on the thread
//! count nor on the order shards are listed in.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;
use xxhash_rust::xxh3::{xxh3_128, Xxh3Builder};

use super::minhash::{jaccard, optimal_bands, shingles, MinHasher, Shingles, UnionFind};
use super::records::{input_files, read_docs, write_lines, Doc};

/// How `dedup` reads records and what counts as a duplicate.
#[derive(Clone, Debug)]
pub struct DedupOptions {
    /// Jaccard similarity above which two documents are near duplicates.
    pub threshold: f64,
    pub num_perm: usize,
    /// Words per shingle.
    pub ngram: usize,
    /// The record field holding the text.
    pub field: String,
    /// The record field naming a document in `duplicate_of` (records without it are named
    /// `path:line`).
    pub id_field: String,
    /// Keep only candidate pairs whose exact Jaccard similarity reaches the threshold.
    pub verify: bool,
    pub seed: u64,
}

impl Default for DedupOptions {
    fn default() -> Self {
        Self {
            threshold: 0.8,
            num_perm: 128,
            ngram: 5,
            field: "text".into(),
            id_field: "id".into(),
            verify: false,
            seed: 1,
        }
    }
}

/// What `stats.json` holds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DedupStats {
    pub documents: usize,
    pub kept: usize,
    pub removed: usize,
    pub exact_duplicates: usize,
    pub near_duplicates: usize,
    /// Clusters of two or more documents.
    pub clusters: usize,
    pub bands: usize,
    pub rows: usize,
    pub threshold: f64,
    pub num_perm: usize,
    pub ngram: usize,
    /// From the first record read to the last written (process start-up excluded).
    pub seconds: f64,
    pub docs_per_s: f64,
}

/// How `cluster` grouped the documents.
#[derive(Clone, Debug, PartialEq)]
pub struct Clusters {
    /// For each document, the index of the first document of its cluster (itself when kept).
    pub roots: Vec<usize>,
    /// Documents removed as exact and as near duplicates.
    pub exact: usize,
    pub near: usize,
    /// The LSH bands and rows used.
    pub bands: usize,
    pub rows: usize,
}

/// The clusters of `texts`.
pub fn cluster(texts: &[&str], opts: &DedupOptions) -> Result<Clusters> {
    let n = texts.len();
    let mut uf = UnionFind::new(n);
    let mut first_of: HashMap<u128, usize> = HashMap::new();
    let mut exact = vec![false; n];
    for (i, t) in texts.iter().enumerate() {
        let first = *first_of.entry(xxh3_128(t.as_bytes())).or_insert(i);
        if first != i {
            uf.union(first, i);
            exact[i] = true;
        }
    }
    // MinHash only the distinct texts; exact copies follow their first.
    let distinct: Vec<usize> = (0..n).filter(|&i| !exact[i]).collect();
    let sets: Vec<Shingles> = distinct.par_iter().map(|&i| shingles(texts[i], opts.ngram)).collect();
    let sigs = MinHasher::new(opts.num_perm, opts.seed).signatures(&sets);
    let flat = sigs.as_slice().context("the signature matrix is not in row-major layout")?;
    let (bands, rows) = optimal_bands(opts.threshold, opts.num_perm);
    // Each band's candidate pairs, found in parallel; the unions are applied in band order, and
    // their result (each cluster rooted at its least member) does not depend on that order.
    let pairs: Vec<Vec<(usize, usize)>> = (0..bands)
        .into_par_iter()
        .map(|band| {
            let mut buckets: HashMap<&[u32], Vec<usize>, Xxh3Builder> = HashMap::with_hasher(Xxh3Builder::new());
            let mut pairs = Vec::new();
            for (k, sig) in flat.chunks_exact(opts.num_perm).enumerate() {
                let key = &sig[band * rows..(band + 1) * rows];
                let members = buckets.entry(key).or_default();
                // Without verification one link to the bucket's first member joins the cluster;
                // with it, every earlier member is a candidate to check.
                let candidates = if opts.verify { &members[..] } else { &members[..members.len().min(1)] };
                for &j in candidates {
                    if !opts.verify || jaccard(&sets[j], &sets[k]) >= opts.threshold {
                        pairs.push((j, k));
                    }
                }
                members.push(k);
            }
            pairs
        })
        .collect();
    for (j, k) in pairs.into_iter().flatten() {
        uf.union(distinct[j], distinct[k]);
    }
    let roots: Vec<usize> = (0..n).map(|i| uf.find(i)).collect();
    let removed_exact = exact.iter().filter(|&&e| e).count();
    let removed = roots.iter().enumerate().filter(|(i, r)| *i != **r).count();
    Ok(Clusters { roots, exact: removed_exact, near: removed - removed_exact, bands, rows })
}

/// Deduplicates the records of `input` into `out`: `kept.jsonl`, `removed.jsonl` (each record
/// with `duplicate_of`) and `stats.json`.
pub fn dedup(input: &Path, out: &Path, opts: &DedupOptions) -> Result<DedupStats> {
    ensure!(opts.threshold > 0.0 && opts.threshold < 1.0, "--threshold must be in (0, 1), got {}", opts.threshold);
    ensure!(opts.num_perm >= 2, "--num-perm must be at least 2");
    ensure!(opts.ngram >= 1, "--ngram must be at least 1");
    let files = input_files(input)?;
    let start = Instant::now();
    let docs = read_docs(&files, &opts.field)?;
    let texts: Vec<&str> = docs.iter().map(|d| d.value[&opts.field].as_str().unwrap_or_default()).collect();
    let Clusters { roots, exact, near, bands, rows } = cluster(&texts, opts)?;
    let name = |d: &Doc| match d.value.get(&opts.id_field) {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(v) if !v.is_null() => v.clone(),
        _ => Value::String(format!("{}:{}", d.path.display(), d.line)),
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_lines(
        &out.join("kept.jsonl"),
        docs.iter().enumerate().filter(|(i, _)| roots[*i] == *i).map(|(_, d)| d.raw.clone()),
    )?;
    write_lines(
        &out.join("removed.jsonl"),
        docs.iter().enumerate().filter(|(i, _)| roots[*i] != *i).map(|(i, d)| {
            let mut v = d.value.clone();
            v["duplicate_of"] = name(&docs[roots[i]]);
            v.to_string()
        }),
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let mut sizes: HashMap<usize, usize> = HashMap::new();
    roots.iter().for_each(|&r| *sizes.entry(r).or_default() += 1);
    let stats = DedupStats {
        documents: docs.len(),
        kept: sizes.len(),
        removed: docs.len() - sizes.len(),
        exact_duplicates: exact,
        near_duplicates: near,
        clusters: sizes.values().filter(|&&s| s > 1).count(),
        bands,
        rows,
        threshold: opts.threshold,
        num_perm: opts.num_perm,
        ngram: opts.ngram,
        seconds,
        docs_per_s: docs.len() as f64 / seconds.max(1e-9),
    };
    std::fs::write(out.join("stats.json"), serde_json::to_string_pretty(&stats)? + "\n")
        .with_context(|| format!("writing {}", out.join("stats.json").display()))?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_near_duplicates_join_the_first_of_their_cluster() {
        let base = "the red fox ran over the green hill and then it slept under the tall old oak tree all day";
        let near = "the red fox ran over the green hill and then it slept under the tall old oak tree all night";
        let other = "a completely different sentence about ships sailing across a cold and stormy northern sea";
        let texts = [other, base, near, base, other];
        let opts = DedupOptions { threshold: 0.7, ..DedupOptions::default() };
        let c = cluster(&texts, &opts).unwrap();
        assert_eq!(c.roots, vec![0, 1, 1, 1, 0]);
        assert_eq!((c.exact, c.near), (2, 1));
        let verified =
            cluster(&texts, &DedupOptions { verify: true, threshold: 0.7, ..DedupOptions::default() }).unwrap();
        assert_eq!(verified.roots, c.roots);
    }
}
