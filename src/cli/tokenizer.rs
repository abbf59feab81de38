//! `gptlab tokenizer`: byte-level BPE.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use gptlab::{data::corpus, tokenizer::Tokenizer};

#[derive(Subcommand)]
pub enum TokenizerCommand {
    /// Train byte-level BPE on a corpus directory's train split
    Train {
        #[arg(long)]
        corpus: PathBuf,
        #[arg(long, default_value_t = 1024)]
        vocab_size: usize,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(cmd: TokenizerCommand) -> Result<()> {
    let TokenizerCommand::Train { corpus: dir, vocab_size, out } = cmd;
    let texts = corpus::read_split(&dir, "train")?;
    let tok = Tokenizer::train(texts.iter(), vocab_size, &out)?;
    println!("wrote {} ({} tokens)", out.display(), tok.vocab_size());
    Ok(())
}
