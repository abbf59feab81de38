//! Data-parallel training on c10d's Gloo backend, two ranks on this machine: equal to one
//! process with the whole batch, resumable, and failing cleanly when a rank dies.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::clip::write_clip_config;
use crate::common::{nano_config, run_ok, tensors};

/// A nano GPT run over the shared shards, without dropout (a rank's rows draw other dropout
/// masks than the same rows in one process), logging every step.
fn config(dir: &Path, name: &str, max_steps: u64) -> PathBuf {
    let path = dir.join(format!("{name}_{max_steps}.toml"));
    std::fs::write(&path, nano_config(&dir.join(name), max_steps, 0.0, "log_interval = 1")).unwrap();
    path
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    gptlab::jsonl::read_jsonl(&run.join("metrics.jsonl")).unwrap()
}

/// Two runs logged the same steps with losses and gradient norms equal within `tol` (relative
/// to the value where it exceeds 1), and hold the same weights within `tol`.
pub fn assert_runs_match(a: &Path, b: &Path, tol: f64) {
    let (ma, mb) = (metrics(a), metrics(b));
    assert_eq!(ma.len(), mb.len());
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!(x["step"], y["step"]);
        for key in ["train_loss", "grad_norm", "val_loss"] {
            match (x[key].as_f64(), y[key].as_f64()) {
                (Some(u), Some(v)) => {
                    assert!((u - v).abs() <= tol * u.abs().max(1.0), "step {}: {key} {u} vs {v}", x["step"])
                }
                (u, v) => assert_eq!(u, v, "step {}: {key}", x["step"]),
            }
        }
    }
    let weights = |run: &Path| tensors(&run.join("checkpoint/model.safetensors"));
    for ((na, ta), (nb, tb)) in weights(a).iter().zip(&weights(b)) {
        assert_eq!(na, nb);
        let diff = (ta - tb).abs().max().double_value(&[]);
        assert!(diff <= tol, "{na} differs by {diff}");
    }
}

#[test]
fn two_ranks_train_like_one_process_with_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(&["train", "--config", config(dir.path(), "one", 8).to_str().unwrap()]);
    let out =
        run_ok(&["launch", "--nproc", "2", "--", "train", "--config", config(dir.path(), "two", 8).to_str().unwrap()]);
    // Rank 0 alone reports and writes.
    assert_eq!(out.matches("trained 8 steps").count(), 1, "{out}");
    assert_runs_match(&dir.path().join("one"), &dir.path().join("two"), 1e-5);
    assert_eq!(metrics(&dir.path().join("two")).len(), 8);
}

#[test]
fn two_clip_ranks_contrast_the_whole_batch_like_one_process() {
    // The contrast needs every pair of the batch: the ranks gather each other's features.
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run_ok(&["clip", "train", "--config", write_clip_config(one.path(), 4).to_str().unwrap()]);
    let cfg = write_clip_config(two.path(), 4);
    let out = run_ok(&["launch", "--nproc", "2", "--", "clip", "train", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.matches("trained CLIP 4 steps").count(), 1, "{out}");
    assert_runs_match(&one.path().join("run"), &two.path().join("run"), 1e-5);
}

#[test]
fn a_resumed_two_rank_run_equals_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let launch = |cfg: PathBuf, resume: bool| {
        let mut args = vec!["launch", "--nproc", "2", "--", "train", "--config", cfg.to_str().unwrap()];
        args.extend(resume.then_some("--resume"));
        run_ok(&args);
    };
    launch(config(dir.path(), "straight", 8), false);
    launch(config(dir.path(), "split", 4), false);
    launch(config(dir.path(), "split", 8), true);
    assert_runs_match(&dir.path().join("straight"), &dir.path().join("split"), 1e-6);
}

#[test]
fn a_rank_that_dies_makes_the_other_fail_with_a_message_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "run", 100_000);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let rank = |r: &str| {
        Command::new(env!("CARGO_BIN_EXE_gptlab"))
            .args(["train", "--config", cfg.to_str().unwrap()])
            .envs([("RANK", r), ("LOCAL_RANK", r), ("WORLD_SIZE", "2"), ("MASTER_PORT", port.as_str())])
            .env("GPTLAB_DIST_TIMEOUT_S", "30")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (mut main, mut other) = (rank("0"), rank("1"));
    // Kill rank 1 once training is under way (rank 0 has logged a step).
    let log = dir.path().join("run/metrics.jsonl");
    let start = Instant::now();
    while std::fs::read_to_string(&log).map_or(true, |s| s.lines().count() < 2) {
        assert!(start.elapsed() < Duration::from_secs(60), "the ranks never started training");
        std::thread::sleep(Duration::from_millis(20));
    }
    other.kill().unwrap();
    other.wait().unwrap();
    let killed = Instant::now();
    let status = main.wait().unwrap();
    let waited = killed.elapsed();
    let stderr = std::io::read_to_string(main.stderr.take().unwrap()).unwrap();
    assert!(!status.success(), "rank 0 should fail once rank 1 is gone");
    assert!(waited < Duration::from_secs(30), "rank 0 took {waited:?} to notice");
    let error: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(error[0].contains("rank 0 of 2") && error[0].contains("another rank stopped"), "{}", error[0]);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The last checkpoint stays loadable.
    if dir.path().join("run/checkpoint").exists() {
        run_ok(&["info", "--ckpt", dir.path().join("run/checkpoint").to_str().unwrap()]);
    }
}

#[test]
fn launch_stops_at_the_first_failing_rank() {
    let out = crate::common::gptlab(&["launch", "--nproc", "2", "--", "train", "--config", "/nonexistent/run.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("of 2 failed (exit status 1)"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_data_parallel_settings_fail_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "run", 4);
    let rank = |rank: &str, world: &str, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gptlab"))
            .args(["train", "--config", cfg.to_str().unwrap()])
            .args(extra)
            .envs([("RANK", rank), ("LOCAL_RANK", rank), ("WORLD_SIZE", world)])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        stderr
    };
    // GPT's ranks must hold equal shares of a micro-batch: 4 windows do not divide among 3.
    assert_eq!(rank("0", "3", &[]), "error: batch_size 4 does not divide among 3 ranks");
    // A launched rank's `cuda` is its own GPU, cuda:LOCAL_RANK.
    let gpus = if tch::Cuda::is_available() { tch::Cuda::device_count() } else { 0 };
    if gpus < 2 {
        assert_eq!(
            rank("1", "2", &["--device", "cuda"]),
            format!("error: device cuda:1 (LOCAL_RANK 1) requested but this machine has {gpus} CUDA device(s)")
        );
    }
    assert!(!dir.path().join("run").exists(), "nothing is written");
}
