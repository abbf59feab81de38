//! `gptlab launch --nproc N -- <command>`: torchrun's single-machine case. Starts N copies of
//! this binary with the launch environment of ranks 0..N (rendezvous on 127.0.0.1 at a free
//! port unless one is given), and stops the others as soon as one rank fails.

use std::ffi::OsString;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

/// What `launch` starts.
pub struct LaunchOptions {
    pub nproc: usize,
    /// The rendezvous port (default: one the OS reports free).
    pub master_port: Option<u16>,
    /// Arguments of the `gptlab` command each rank runs.
    pub args: Vec<OsString>,
}

/// A port nothing listens on now (the OS's choice for a socket bound to port 0).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("looking for a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Runs the ranks to the end; the first rank to fail is the error, and the others are stopped.
pub fn launch(opts: &LaunchOptions) -> Result<()> {
    ensure!(opts.nproc >= 1, "--nproc must be at least 1");
    ensure!(
        !opts.args.is_empty(),
        "give the gptlab command each rank runs after --, e.g. gptlab launch --nproc 2 -- train --config run.toml"
    );
    let exe = std::env::current_exe().context("finding the gptlab binary")?;
    let port = match opts.master_port {
        Some(p) => p,
        None => free_port()?,
    };
    // As torchrun does, the cores are shared out among the ranks unless OMP_NUM_THREADS says.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / opts.nproc).max(1).to_string();
    let mut ranks: Vec<Option<Child>> = Vec::new();
    for rank in 0..opts.nproc {
        let mut cmd = Command::new(&exe);
        cmd.args(&opts.args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", opts.nproc.to_string())
            .env("LOCAL_WORLD_SIZE", opts.nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string());
        if std::env::var_os("OMP_NUM_THREADS").is_none() {
            cmd.env("OMP_NUM_THREADS", &threads);
        }
        match cmd.spawn() {
            Ok(child) => ranks.push(Some(child)),
            Err(e) => {
                stop(&mut ranks);
                return Err(e).with_context(|| format!("starting rank {rank}"));
            }
        }
    }
    loop {
        let mut running = 0;
        for rank in 0..ranks.len() {
            let Some(child) = ranks[rank].as_mut() else { continue };
            match child.try_wait() {
                Ok(None) => running += 1,
                Ok(Some(status)) if status.success() => ranks[rank] = None,
                Ok(Some(status)) => {
                    ranks[rank] = None;
                    stop(&mut ranks);
                    bail!("rank {rank} of {} failed ({}); the other ranks were stopped", opts.nproc, describe(status));
                }
                Err(e) => {
                    stop(&mut ranks);
                    return Err(e).with_context(|| format!("waiting for rank {rank}"));
                }
            }
        }
        if running == 0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills and reaps every rank still running.
fn stop(ranks: &mut [Option<Child>]) {
    for mut child in ranks.iter_mut().filter_map(Option::take) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}
