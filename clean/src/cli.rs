//! The `dedup` command line, shared by `gptlab clean dedup` and `gptlab-clean dedup`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::dedup::{dedup, DedupOptions};

#[derive(Args, Clone, Debug)]
pub struct DedupParams {
    /// Jaccard similarity of word n-grams above which documents are near duplicates
    #[arg(long, default_value_t = 0.8)]
    pub threshold: f64,
    #[arg(long, default_value_t = 128)]
    pub num_perm: usize,
    /// Words per shingle
    #[arg(long, default_value_t = 5)]
    pub ngram: usize,
    /// The record field holding the text
    #[arg(long, default_value = "text")]
    pub field: String,
    /// The record field `duplicate_of` names the kept document by (else its path:line)
    #[arg(long, default_value = "id")]
    pub id_field: String,
    /// Check every candidate pair's exact Jaccard similarity against the threshold
    #[arg(long)]
    pub verify: bool,
    /// Seeds the MinHash permutations
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl From<DedupParams> for DedupOptions {
    fn from(p: DedupParams) -> Self {
        Self {
            threshold: p.threshold,
            num_perm: p.num_perm,
            ngram: p.ngram,
            field: p.field,
            id_field: p.id_field,
            verify: p.verify,
            seed: p.seed,
        }
    }
}

#[derive(Args, Clone, Debug)]
pub struct DedupArgs {
    /// A JSONL file, or a folder whose .jsonl files are read in path order
    #[arg(long)]
    pub input: PathBuf,
    /// Output folder
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub params: DedupParams,
    /// Worker threads (default: all cores)
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Sizes rayon's global pool; `None` leaves it at one thread per core.
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        anyhow::ensure!(n > 0, "--threads must be positive");
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global()?;
    }
    Ok(())
}

/// Runs `dedup` and prints its one-line summary.
pub fn run_dedup(a: DedupArgs) -> Result<()> {
    set_threads(a.threads)?;
    let s = dedup(&a.input, &a.out, &a.params.into())?;
    println!(
        "{} documents: kept {}, removed {} ({} exact, {} near duplicates in {} clusters); {} bands of {} rows; {:.0} docs/s; {}",
        s.documents,
        s.kept,
        s.removed,
        s.exact_duplicates,
        s.near_duplicates,
        s.clusters,
        s.bands,
        s.rows,
        s.docs_per_s,
        a.out.display()
    );
    Ok(())
}
