//! `gptlab clean`: GPT-3's data cleaning stages.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use gptlab::clean::cli::DedupArgs;
use gptlab::clean::decontaminate::{decontaminate, DecontaminateOptions, EvalNgrams};
use gptlab::clean::quality::{self, QualityModel, TrainOptions};
use gptlab::clean::records::read_texts;

#[derive(Subcommand)]
pub enum CleanCommand {
    /// Remove exact and near duplicates (MinHash LSH over word n-grams): kept.jsonl, removed.jsonl, stats.json
    Dedup(DedupArgs),
    /// The quality filter, near-duplicate removal and decontamination in GPT-3's order, from a TOML config, with report.md
    Pipeline {
        #[arg(long)]
        config: PathBuf,
    },
    /// Cut out 13-gram overlaps with evaluation documents, with GPT-3's window and piece rules
    Decontaminate(DecontaminateArgs),
    /// GPT-3's quality classifier: train it, score documents, or filter with the Pareto rule
    #[command(subcommand)]
    Quality(QualityCommand),
}

#[derive(Subcommand)]
pub enum QualityCommand {
    /// Logistic regression on hashed unigrams and bigrams: curated text (positives) against raw crawl (negatives)
    Train {
        /// Curated documents (a JSONL file or a folder of them)
        #[arg(long)]
        positives: PathBuf,
        /// Raw crawl documents
        #[arg(long)]
        negatives: PathBuf,
        /// Model folder: model.safetensors, model.json (with the held-out report)
        #[arg(long)]
        out: PathBuf,
        /// log2 of the hashed feature count
        #[arg(long, default_value_t = 20)]
        dims_log2: u32,
        #[arg(long, default_value_t = 3)]
        epochs: usize,
        #[arg(long, default_value = "text")]
        field: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Add each record's quality_score
    Score {
        #[command(flatten)]
        src: ScoredInput,
        /// The scored JSONL file to write
        #[arg(long)]
        out: PathBuf,
    },
    /// Keep a document when a Pareto(alpha) draw exceeds 1 - score: kept.jsonl, removed.jsonl, stats.json, scores.png
    Filter {
        #[command(flatten)]
        src: ScoredInput,
        #[arg(long)]
        out: PathBuf,
        /// GPT-3's shape parameter
        #[arg(long, default_value_t = 9.0)]
        alpha: f64,
        /// Seeds each document's draw (with its position)
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Args)]
pub struct DecontaminateArgs {
    /// A JSONL file, or a folder whose .jsonl files are read in path order
    #[arg(long)]
    input: PathBuf,
    /// Comma-separated harness tasks: built-in names and lm-eval task files (.yaml)
    #[arg(long)]
    tasks: String,
    /// Output folder: kept.jsonl, removed.jsonl, stats.json
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 13)]
    ngram: usize,
    /// Characters removed either side of an overlap
    #[arg(long, default_value_t = 200)]
    window: usize,
    /// Pieces shorter than this (characters) are dropped
    #[arg(long, default_value_t = 200)]
    min_piece: usize,
    /// Documents cut into more pieces are dropped whole
    #[arg(long, default_value_t = 10)]
    max_pieces: usize,
    #[arg(long, default_value = "text")]
    field: String,
}

/// The documents a trained classifier scores.
#[derive(Args)]
pub struct ScoredInput {
    /// A model folder from `clean quality train`
    #[arg(long)]
    model: PathBuf,
    /// A JSONL file, or a folder whose .jsonl files are read in path order
    #[arg(long)]
    input: PathBuf,
    /// The record field holding the text
    #[arg(long, default_value = "text")]
    field: String,
}

fn run_quality(cmd: QualityCommand) -> Result<()> {
    match cmd {
        QualityCommand::Train { positives, negatives, out, dims_log2, epochs, field, seed } => {
            let (p, n) = (read_texts(&positives, &field)?, read_texts(&negatives, &field)?);
            let opts = TrainOptions { dims_log2, epochs, seed, ..TrainOptions::default() };
            let (model, r) = quality::train(
                &p.iter().map(String::as_str).collect::<Vec<_>>(),
                &n.iter().map(String::as_str).collect::<Vec<_>>(),
                &opts,
            )?;
            model.save(&out, &r, &opts)?;
            println!(
                "trained on {} documents; held out {}: accuracy {:.3}, precision {:.3}, recall {:.3} (curated at score 0.5); {}",
                r.train_docs,
                r.val_docs,
                r.val_accuracy,
                r.val_precision,
                r.val_recall,
                out.display()
            );
            Ok(())
        }
        QualityCommand::Score { src, out } => {
            let n = quality::score_file(&QualityModel::load(&src.model)?, &src.input, &out, &src.field)?;
            println!("scored {n} documents into {}", out.display());
            Ok(())
        }
        QualityCommand::Filter { src, out, alpha, seed } => {
            let s = quality::filter(&QualityModel::load(&src.model)?, &src.input, &out, &src.field, alpha, seed)?;
            println!(
                "{} documents: kept {} ({:.3}), mean score {:.3}; {}",
                s.documents,
                s.kept,
                s.kept_fraction,
                s.mean_score,
                out.display()
            );
            Ok(())
        }
    }
}

pub fn run(cmd: CleanCommand) -> Result<()> {
    match cmd {
        CleanCommand::Quality(cmd) => run_quality(cmd),
        CleanCommand::Pipeline { config } => {
            let cfg: gptlab::clean::pipeline::PipelineConfig = gptlab::config::read_toml(&config)?;
            for s in gptlab::clean::pipeline::run(&cfg)? {
                println!(
                    "{:<24} {:>8} in {:>8} out {:>8} removed",
                    s.stage, s.documents_in, s.documents_out, s.removed
                );
            }
            println!("report: {}", cfg.out_dir.join("report.md").display());
            Ok(())
        }
        CleanCommand::Decontaminate(a) => {
            let specs: Vec<String> =
                a.tasks.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
            anyhow::ensure!(!specs.is_empty(), "give --tasks (built-in names or .yaml files)");
            let opts = DecontaminateOptions {
                ngram: a.ngram,
                window: a.window,
                min_piece: a.min_piece,
                max_pieces: a.max_pieces,
                field: a.field,
            };
            let eval = EvalNgrams::from_tasks(&specs, opts.ngram)?;
            let s = decontaminate(&a.input, &a.out, &eval, &opts)?;
            println!(
                "{} documents: {} clean, {} cut into {} pieces, {} dropped; overlaps per task {:?}; {}",
                s.documents,
                s.clean,
                s.cut,
                s.pieces,
                s.dropped,
                s.per_task,
                a.out.display()
            );
            Ok(())
        }
        CleanCommand::Dedup(a) => gptlab::clean::cli::run_dedup(a),
    }
}
