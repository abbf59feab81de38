//! `gptlab clean dedup`: exact duplicates by a hash of the text, near duplicates by MinHash LSH
//! over word n-grams, clustered with union-find; each cluster keeps the document that comes
//! first in input order (files by path, then line), so the result depends neither on the thread
//! count nor on the order shards are listed in.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;
use xxhash_rust::xxh3::{xxh3_128, xxh3_64_with_seed};

use ndarray::Array2;

use crate::minhash::{jaccard, optimal_bands, shingle_hashes, shingles, MinHasher, Shingles, UnionFind};
use crate::records::{for_each_line_batch, input_files, parse_fields, Fields, JsonlWriter};

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

/// Clusters documents fed in input order, batch by batch: a document costs its exact hash and,
/// unless it repeats an earlier text, one signature row and its band keys' hashes (and its
/// shingles when verifying), so the corpus itself is never held.
pub struct Clusterer {
    opts: DedupOptions,
    hasher: MinHasher,
    bands: usize,
    rows: usize,
    first_of: HashMap<u128, usize>,
    /// For each document, the earlier document whose text it repeats.
    copy_of: Vec<Option<usize>>,
    /// The documents with a signature row, in row order.
    distinct: Vec<usize>,
    /// Signature rows, row-major [distinct, num_perm].
    sigs: Vec<u32>,
    /// Each band's hash of its rows' values, row-major [distinct, bands], computed beside the
    /// signatures so banding does not hash.
    band_hashes: Vec<u64>,
    /// Shingle sets of the distinct documents (kept only to verify candidates).
    sets: Vec<Shingles>,
}

/// A document's values in one band, with their hash computed once; equal keys are equal values.
struct BandKey<'a> {
    hash: u64,
    values: &'a [u32],
}

impl PartialEq for BandKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.values == other.values
    }
}

impl Eq for BandKey<'_> {}

impl Hash for BandKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// The hash of a band's values, 64 values (one short xxh3 input) at a time.
fn band_hash(values: &[u32]) -> u64 {
    let mut bytes = [0u8; 4 * 64];
    values.chunks(64).fold(0, |seed, chunk| {
        for (b, v) in bytes.chunks_exact_mut(4).zip(chunk) {
            b.copy_from_slice(&v.to_le_bytes());
        }
        xxh3_64_with_seed(&bytes[..4 * chunk.len()], seed)
    })
}

impl Clusterer {
    pub fn new(opts: &DedupOptions) -> Self {
        let (bands, rows) = optimal_bands(opts.threshold, opts.num_perm);
        Self {
            opts: opts.clone(),
            hasher: MinHasher::new(opts.num_perm, opts.seed),
            bands,
            rows,
            first_of: HashMap::new(),
            copy_of: Vec::new(),
            distinct: Vec::new(),
            sigs: Vec::new(),
            band_hashes: Vec::new(),
            sets: Vec::new(),
        }
    }

    /// Adds the next documents in input order.
    pub fn add(&mut self, texts: &[&str]) {
        let hashes: Vec<u128> = texts.par_iter().map(|t| xxh3_128(t.as_bytes())).collect();
        let mut fresh = Vec::new();
        for (k, h) in hashes.into_iter().enumerate() {
            let i = self.copy_of.len();
            let first = *self.first_of.entry(h).or_insert(i);
            self.copy_of.push((first != i).then_some(first));
            if first == i {
                self.distinct.push(i);
                fresh.push(k);
            }
        }
        // Each new document's shingles, signature row and band hashes in one pass, written in
        // place; the shingles are sorted into a set only when verification needs them.
        let Self { opts, hasher, bands, rows, sigs, band_hashes, sets, .. } = self;
        let (bands, rows) = (*bands, *rows);
        let (sig_start, hash_start) = (sigs.len(), band_hashes.len());
        sigs.resize(sig_start + fresh.len() * opts.num_perm, 0);
        band_hashes.resize(hash_start + fresh.len() * bands, 0);
        let new_sets = sigs[sig_start..]
            .par_chunks_mut(opts.num_perm)
            .zip(band_hashes[hash_start..].par_chunks_mut(bands))
            .zip(&fresh)
            .filter_map(|((row, hashes), &k)| {
                let set =
                    if opts.verify { shingles(texts[k], opts.ngram) } else { shingle_hashes(texts[k], opts.ngram) };
                hasher.signature_into(&set, row);
                for (band, h) in hashes.iter_mut().enumerate() {
                    *h = band_hash(&row[band * rows..(band + 1) * rows]);
                }
                opts.verify.then_some(set)
            });
        sets.par_extend(new_sets);
    }

    pub fn len(&self) -> usize {
        self.copy_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.copy_of.is_empty()
    }

    /// Bands the signatures and joins exact copies and candidate pairs into clusters.
    pub fn finish(self) -> Result<Clusters> {
        let Self { opts, bands, rows, copy_of, distinct, sigs, band_hashes, sets, .. } = self;
        let n = copy_of.len();
        let mut uf = UnionFind::new(n);
        for (i, first) in copy_of.iter().enumerate() {
            if let Some(first) = first {
                uf.union(*first, i);
            }
        }
        let sigs = Array2::from_shape_vec((distinct.len(), opts.num_perm), sigs)?;
        let flat = sigs.as_slice().context("the signature matrix is not in row-major layout")?;
        // Each band's candidate pairs, found in parallel; the unions are applied in band order,
        // and their result (each cluster rooted at its least member) does not depend on that order.
        let pairs: Vec<Vec<(usize, usize)>> = (0..bands)
            .into_par_iter()
            .map(|band| {
                // Each bucket's first member; with verification, also its later ones.
                let mut first: HashMap<BandKey, usize> = HashMap::with_capacity(distinct.len());
                let mut later: HashMap<usize, Vec<usize>> = HashMap::new();
                let mut pairs = Vec::new();
                for (k, sig) in flat.chunks_exact(opts.num_perm).enumerate() {
                    let key =
                        BandKey { hash: band_hashes[k * bands + band], values: &sig[band * rows..(band + 1) * rows] };
                    let j0 = *first.entry(key).or_insert(k);
                    if j0 == k {
                        continue;
                    }
                    // Without verification one link to the bucket's first member joins the
                    // cluster; with it, every earlier member is a candidate to check.
                    if !opts.verify {
                        pairs.push((j0, k));
                        continue;
                    }
                    let members = later.entry(j0).or_default();
                    for &j in std::iter::once(&j0).chain(members.iter()) {
                        if jaccard(&sets[j], &sets[k]) >= opts.threshold {
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
        let exact = copy_of.iter().filter(|c| c.is_some()).count();
        let removed = roots.iter().enumerate().filter(|(i, r)| *i != **r).count();
        Ok(Clusters { roots, exact, near: removed - exact, bands, rows })
    }
}

/// The clusters of `texts`.
pub fn cluster(texts: &[&str], opts: &DedupOptions) -> Result<Clusters> {
    let mut c = Clusterer::new(opts);
    c.add(texts);
    c.finish()
}

/// What `duplicate_of` calls a record: its id field's value, or `path:line` where it has none.
pub fn record_name(id: Option<Value>, at: &str) -> Value {
    id.unwrap_or_else(|| Value::String(at.to_string()))
}

/// A removed record's line: the line as read with `"duplicate_of"` added as its last key, so the
/// record's own keys, their order and its number formatting stay as they were (a record that
/// already has the key gets it replaced).
pub fn with_duplicate_of(raw: &str, name: &Value) -> Result<String> {
    let mut value: Value = serde_json::from_str(raw).context("a removed record is not JSON")?;
    if value.get("duplicate_of").is_none() {
        if let Some(body) = raw.trim_end().strip_suffix('}') {
            return Ok(format!("{body},\"duplicate_of\":{name}}}"));
        }
    }
    value["duplicate_of"] = name.clone();
    Ok(value.to_string())
}

fn check(opts: &DedupOptions) -> Result<()> {
    ensure!(opts.threshold > 0.0 && opts.threshold < 1.0, "--threshold must be in (0, 1), got {}", opts.threshold);
    ensure!(opts.num_perm >= 2, "--num-perm must be at least 2");
    ensure!(opts.ngram >= 1, "--ngram must be at least 1");
    Ok(())
}

/// Deduplicates the records of `input` into `out`: `kept.jsonl`, `removed.jsonl` (each record
/// with `duplicate_of`) and `stats.json`. Two streaming passes: the first signs every record,
/// the second copies each line to where it belongs.
pub fn dedup(input: &Path, out: &Path, opts: &DedupOptions) -> Result<DedupStats> {
    check(opts)?;
    let files = input_files(input)?;
    let start = Instant::now();
    let at = |file: usize, line: usize| format!("{}:{line}", files[file].display());
    let mut clusterer = Clusterer::new(opts);
    for_each_line_batch(&files, |batch| {
        let texts: Vec<Result<Fields>> =
            batch.par_iter().map(|(f, l, raw)| parse_fields(raw, &opts.field, None, || at(*f, *l))).collect();
        let texts = texts.into_iter().collect::<Result<Vec<Fields>>>()?;
        clusterer.add(&texts.iter().map(|f| f.text.as_ref()).collect::<Vec<_>>());
        Ok(())
    })?;
    ensure!(!clusterer.is_empty(), "no records to deduplicate");
    let documents = clusterer.len();
    let Clusters { roots, exact, near, bands, rows } = clusterer.finish()?;

    let mut sizes: HashMap<usize, usize> = HashMap::new();
    roots.iter().for_each(|&r| *sizes.entry(r).or_default() += 1);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut kept = JsonlWriter::create(&out.join("kept.jsonl"))?;
    let mut removed = JsonlWriter::create(&out.join("removed.jsonl"))?;
    // A cluster's root comes before its other members, so its name is known when they are met.
    let mut names: HashMap<usize, Value> = HashMap::new();
    let mut i = 0;
    // Batches read on their own thread, so reading overlaps writing.
    for_each_line_batch(&files, |batch| {
        for (f, l, raw) in batch {
            let (f, l) = (*f, *l);
            ensure!(i < documents, "{} changed while being read", files[f].display());
            if roots[i] == i {
                if sizes[&i] > 1 {
                    let id = parse_fields(raw, &opts.field, Some(&opts.id_field), || at(f, l))?.id;
                    names.insert(i, record_name(id, &at(f, l)));
                }
                kept.line(raw)?;
            } else {
                let name = names.get(&roots[i]).context("a cluster's first record was not met before its copies")?;
                removed.line(&with_duplicate_of(raw, name)?)?;
            }
            i += 1;
        }
        Ok(())
    })?;
    kept.commit()?;
    removed.commit()?;
    let seconds = start.elapsed().as_secs_f64();
    let stats = DedupStats {
        documents,
        kept: sizes.len(),
        removed: documents - sizes.len(),
        exact_duplicates: exact,
        near_duplicates: near,
        clusters: sizes.values().filter(|&&s| s > 1).count(),
        bands,
        rows,
        threshold: opts.threshold,
        num_perm: opts.num_perm,
        ngram: opts.ngram,
        seconds,
        docs_per_s: documents as f64 / seconds.max(1e-9),
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
