//! `gptlab clean`: GPT-3's data cleaning stages.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use gptlab::clean::dedup::{dedup, DedupOptions};

#[derive(Subcommand)]
pub enum CleanCommand {
    /// Remove exact and near duplicates (MinHash LSH over word n-grams): kept.jsonl, removed.jsonl, stats.json
    Dedup(DedupArgs),
}

#[derive(Args)]
pub struct DedupArgs {
    /// A JSONL file, or a folder whose .jsonl files are read in path order
    #[arg(long)]
    input: PathBuf,
    /// Output folder
    #[arg(long)]
    out: PathBuf,
    /// Jaccard similarity of word n-grams above which documents are near duplicates
    #[arg(long, default_value_t = 0.8)]
    threshold: f64,
    #[arg(long, default_value_t = 128)]
    num_perm: usize,
    /// Words per shingle
    #[arg(long, default_value_t = 5)]
    ngram: usize,
    /// The record field holding the text
    #[arg(long, default_value = "text")]
    field: String,
    /// The record field `duplicate_of` names the kept document by (else its path:line)
    #[arg(long, default_value = "id")]
    id_field: String,
    /// Check every candidate pair's exact Jaccard similarity against the threshold
    #[arg(long)]
    verify: bool,
    /// Seeds the MinHash permutations
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(cmd: CleanCommand) -> Result<()> {
    match cmd {
        CleanCommand::Dedup(a) => {
            if let Some(n) = a.threads {
                anyhow::ensure!(n > 0, "--threads must be positive");
                rayon::ThreadPoolBuilder::new().num_threads(n).build_global()?;
            }
            let opts = DedupOptions {
                threshold: a.threshold,
                num_perm: a.num_perm,
                ngram: a.ngram,
                field: a.field,
                id_field: a.id_field,
                verify: a.verify,
                seed: a.seed,
            };
            let s = dedup(&a.input, &a.out, &opts)?;
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
    }
}
