//! `gptlab-clean`: near-duplicate removal without libtorch, and the executor side of the Spark
//! job. Every failure ends as one `error: ...` line and a non-zero exit.

use std::io::{stdin, stdout};

use anyhow::Result;
use clap::{Parser, Subcommand};
use gptlab_clean::cli::{run_dedup, set_threads, DedupArgs, DedupParams};
use gptlab_clean::minhash::optimal_bands;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "gptlab-clean",
    version,
    about = "GPT-3's MinHash LSH deduplication, on one machine or inside Spark executors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Remove exact and near duplicates (the same command as `gptlab clean dedup`)
    Dedup(DedupArgs),
    /// Spark executors: sign key<TAB>path:line<TAB>record lines from stdin (hash, MinHash, name)
    Sign {
        #[command(flatten)]
        params: DedupParams,
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Spark executors: add "duplicate_of" to key<TAB>name<TAB>record lines from stdin
    Annotate,
    /// The LSH bands and rows chosen for a threshold and permutation count
    Bands {
        #[arg(long, default_value_t = 0.8)]
        threshold: f64,
        #[arg(long, default_value_t = 128)]
        num_perm: usize,
    },
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Dedup(a) => run_dedup(a),
        Command::Sign { params, threads } => {
            set_threads(threads)?;
            let verify = params.verify;
            gptlab_clean::spark::sign(stdin().lock(), stdout().lock(), &params.into(), verify)
        }
        Command::Annotate => gptlab_clean::spark::annotate(stdin().lock(), stdout().lock()),
        Command::Bands { threshold, num_perm } => {
            anyhow::ensure!(threshold > 0.0 && threshold < 1.0, "--threshold must be in (0, 1)");
            anyhow::ensure!(num_perm >= 2, "--num-perm must be at least 2");
            let (b, r) = optimal_bands(threshold, num_perm);
            println!("{b} {r}");
            Ok(())
        }
    }
}

fn main() {
    // End quietly when a reader closes the pipe (Rust ignores SIGPIPE by default).
    // SAFETY: setting a signal's disposition to its default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if let Err(e) = run(Cli::parse()) {
        let msg = format!("{e:#}");
        eprintln!("error: {}", msg.lines().next().unwrap_or(""));
        std::process::exit(1);
    }
}
