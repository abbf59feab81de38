//! `gptlab launch`: a data-parallel run of N processes on this machine.

use std::ffi::OsString;

use anyhow::Result;
use clap::Args;
use gptlab::dist::launch::{launch, LaunchOptions};

#[derive(Args)]
pub struct LaunchArgs {
    /// Processes (ranks) to start
    #[arg(long)]
    nproc: usize,
    /// The rendezvous port on 127.0.0.1 (default: a free one)
    #[arg(long)]
    master_port: Option<u16>,
    /// The gptlab command each rank runs, after `--` (e.g. -- train --config run.toml)
    #[arg(last = true, required = true)]
    command: Vec<OsString>,
}

pub fn run(a: LaunchArgs) -> Result<()> {
    launch(&LaunchOptions { nproc: a.nproc, master_port: a.master_port, args: a.command })
}
