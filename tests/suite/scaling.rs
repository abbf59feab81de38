//! Scaling laws: the fit recovers known parameters and agrees with scipy, the bootstrap is
//! seeded, bad tables fail cleanly, and a sweep counts FLOPs by the formula and resumes.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::common;

const HEADER: &str = "name,n_params,n_params_non_embedding,n_tokens,loss";

/// Points from Chinchilla's published law, L = 1.69 + 406.4/N^0.34 + 410.7/D^0.28, with
/// multiplicative noise of about 0.1%.
fn chinchilla_table(dir: &Path, n: usize, seed: u64) -> PathBuf {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut lines = vec![HEADER.to_string()];
    for i in 0..n {
        let p: f64 = 10f64.powf(rng.random_range(6.0..9.0));
        let d: f64 = 10f64.powf(rng.random_range(7.0..10.0));
        let noise: f64 = rng.random_range(-0.002..0.002);
        let l = (1.69 + 406.4 / p.powf(0.34) + 410.7 / d.powf(0.28)) * noise.exp();
        lines.push(format!("r{i},{p},{},{d},{l}", p * 0.8));
    }
    let path = dir.join("runs.csv");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn fit_json(table: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["scaling", "fit", "--table", table.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    common::run_ok(&args);
    serde_json::from_str(&std::fs::read_to_string(out.join("fit.json")).unwrap()).unwrap()
}

fn param(fit: &Value, law: &str, key: &str) -> f64 {
    fit["laws"][law]["params"][key].as_f64().unwrap_or_else(|| panic!("{law}.{key} in {fit}"))
}

#[test]
fn fit_recovers_chinchilla_and_agrees_with_scipy() {
    let dir = tempfile::tempdir().unwrap();
    let table = chinchilla_table(dir.path(), 30, 7);
    let out = dir.path().join("fit");
    let fit = fit_json(&table, &out, &["--bootstrap", "20", "--predict-n", "1e8", "--predict-d", "2e9"]);
    assert_eq!(fit["laws"]["chinchilla"]["converged"], true);
    let got = |k| param(&fit, "chinchilla", k);
    assert!((got("E") - 1.69).abs() < 0.03, "E = {}", got("E"));
    assert!((got("A") / 406.4 - 1.0).abs() < 0.15, "A = {}", got("A"));
    assert!((got("B") / 410.7 - 1.0).abs() < 0.15, "B = {}", got("B"));
    assert!((got("alpha") - 0.34).abs() < 0.01, "alpha = {}", got("alpha"));
    assert!((got("beta") - 0.28).abs() < 0.01, "beta = {}", got("beta"));
    let truth = 1.69 + 406.4 / 1e8f64.powf(0.34) + 410.7 / 2e9f64.powf(0.28);
    let pred = &fit["predictions"][0];
    assert!((pred["loss"].as_f64().unwrap() / truth - 1.0).abs() < 0.005, "{pred} vs {truth}");
    for law in ["compute", "chinchilla"] {
        for (k, iv) in fit["laws"][law]["intervals"].as_object().unwrap() {
            let (lo, hi) = (iv[0].as_f64().unwrap(), iv[1].as_f64().unwrap());
            assert!(lo <= hi, "{law}.{k}: [{lo}, {hi}]");
        }
    }
    for plot in ["loss_vs_compute", "isoflop", "n_opt", "residuals"] {
        assert!(out.join(format!("{plot}.png")).exists() && out.join(format!("{plot}.svg")).exists(), "{plot}");
    }
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().contains("![loss against compute]"));

    // An independent solver (scipy's least_squares with the same Huber objective and grid)
    // lands on the same optimum.
    let scipy: Value = serde_json::from_str(
        common::run_python(&[
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/chinchilla_scipy.py"),
            table.to_str().unwrap(),
        ])
        .trim(),
    )
    .unwrap();
    let ours = fit["laws"]["chinchilla"]["objective"].as_f64().unwrap();
    let theirs = scipy["objective"].as_f64().unwrap();
    assert!(ours <= theirs * (1.0 + 1e-6) + 1e-12, "L-BFGS objective {ours} above scipy's {theirs}");
    for k in ["E", "A", "B", "alpha", "beta"] {
        let (a, b) = (got(k), scipy[k].as_f64().unwrap());
        assert!((a / b - 1.0).abs() < 0.02, "{k}: ours {a}, scipy {b}");
    }
}

#[test]
fn bootstrap_is_deterministic_in_its_seed() {
    let dir = tempfile::tempdir().unwrap();
    let table = chinchilla_table(dir.path(), 12, 3);
    let run = |seed: &str, out: &str| {
        let fit = fit_json(&table, &dir.path().join(out), &["--bootstrap", "30", "--seed", seed]);
        fit["laws"]["compute"]["intervals"].clone()
    };
    let a = run("5", "a");
    assert_eq!(a, run("5", "b"), "same seed, same intervals");
    assert_ne!(a, run("6", "c"), "another seed, other resamples");
}

#[test]
fn bad_tables_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("{HEADER}\n{body}")).unwrap();
        p
    };
    let good =
        |i: usize| format!("r{i},{},{},{},{}\n", 1e6 * (i + 1) as f64, 1e6, 1e8 * (i + 1) as f64, 3.0 - 0.1 * i as f64);
    let cases = [
        ("few.csv", (0..4).map(good).collect::<String>(), "5 parameters but only 4 runs"),
        (
            "nan.csv",
            (0..6).map(good).collect::<String>() + "r9,1e6,1e6,1e8,nan\n",
            "loss must be a finite positive number",
        ),
        (
            "dup.csv",
            (0..6).map(good).collect::<String>() + &good(2).replacen("r2", "r2b", 1),
            "duplicate of an earlier row",
        ),
        ("name.csv", (0..6).map(good).collect::<String>() + &good(7).replacen("r7", "r1", 1), "appears twice"),
        ("cols.csv", "r0,1e6\n".to_string(), "row 1"),
    ];
    for (file, body, expected) in cases {
        let path = write(file, &body);
        let err = common::run_err(&["scaling", "fit", "--table", path.to_str().unwrap(), "--bootstrap", "5"]);
        assert!(err.contains(expected), "{file}: {err}");
    }
    let missing = dir.path().join("nope");
    let err = common::run_err(&["scaling", "fit", "--runs", missing.to_str().unwrap()]);
    assert!(err.contains("runs.jsonl"), "{err}");
}

const SWEEP: &str = r#"
[data]
docs = 3000
vocab_size = 300

[grid]
widths = [16, 32]
depths = [1]
tokens = [2048, 4096, 8192]
block_size = 32

[train]
batch_size = 8
evals = 2
eval_batches = 2
capability_problems = 2
"#;

#[test]
fn sweep_counts_flops_resumes_and_feeds_the_fit_and_notebook() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sweep.toml");
    std::fs::write(&cfg, SWEEP).unwrap();
    let out = dir.path().join("sweep");
    let sweep = || {
        let o = common::gptlab(&[
            "scaling",
            "sweep",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--jobs",
            "2",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    sweep();
    let csv = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    assert!(csv.starts_with("name,n_layer,n_embd,n_head,n_params,n_params_non_embedding,n_tokens,compute,"), "{csv}");
    assert_eq!(csv.lines().count(), 7);
    let results: Vec<Value> = std::fs::read_to_string(out.join("runs.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for r in &results {
        // FLOPs by hand: per layer 12d² + 13d parameters (biases and layer norms), plus ln_f,
        // the tied wte (vocab 300 padded to 320) and wpe; matmuls are 6 per parameter except
        // wpe, plus attention scores 12·L·T·d per token.
        let (l, d, t, v) = (r["n_layer"].as_f64().unwrap(), r["n_embd"].as_f64().unwrap(), 32.0, 320.0);
        let total = l * (12.0 * d * d + 13.0 * d) + 2.0 * d + v * d + t * d;
        assert_eq!(r["n_params"].as_f64().unwrap(), total, "{r}");
        let flops = 6.0 * (total - t * d) + 12.0 * l * t * d;
        assert_eq!(r["flops_per_token"].as_f64().unwrap(), flops);
        let tokens = r["n_tokens"].as_f64().unwrap();
        assert_eq!(r["compute_exact"].as_f64().unwrap(), flops * tokens);
        assert_eq!(r["compute"].as_f64().unwrap(), 6.0 * total * tokens);
        assert_eq!(r["pass_rates"].as_object().unwrap().len(), 10);
        let logs = r["log_pass_rates"].as_object().unwrap();
        assert_eq!(logs.len(), 10);
        assert!(logs.values().all(|v| v.as_f64().is_some_and(|l| l < 0.0)), "{r}");
        assert!(!r["val_curve"].as_array().unwrap().is_empty());
    }

    // Finished runs are skipped; a run that lost its result resumes from its checkpoint.
    let lost = out.join("runs/L1-W16-T4.1k");
    let kept = out.join("runs/L1-W32-T8.19k/result.json");
    let before = std::fs::metadata(&kept).unwrap().modified().unwrap();
    std::fs::remove_file(lost.join("result.json")).unwrap();
    let log = sweep();
    assert!(log.contains("6 runs: 5 done before, 1 to train"), "{log}");
    assert_eq!(std::fs::metadata(&kept).unwrap().modified().unwrap(), before);
    let again: Value = serde_json::from_str(&std::fs::read_to_string(lost.join("result.json")).unwrap()).unwrap();
    let first = results.iter().find(|r| r["name"] == "L1-W16-T4.1k").unwrap();
    assert_eq!(again["n_tokens"], first["n_tokens"]);
    assert_eq!(again["loss"], first["loss"], "resumed from its final checkpoint, not retrained");

    let fit_out = dir.path().join("fit");
    common::run_ok(&[
        "scaling",
        "fit",
        "--runs",
        out.to_str().unwrap(),
        "--out",
        fit_out.to_str().unwrap(),
        "--bootstrap",
        "10",
    ]);
    std::fs::copy(out.join("runs.csv"), fit_out.join("runs.csv")).unwrap();
    let nb = common::run_python(&[
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/run_notebook.py"),
        concat!(env!("CARGO_MANIFEST_DIR"), "/notebooks/scaling_laws.ipynb"),
        fit_out.to_str().unwrap(),
    ]);
    assert!(nb.contains("notebook ok"), "{nb}");

    // GPT-4's protocol: register the target's prediction, refuse to re-register, train, check.
    let target = dir.path().join("target.toml");
    std::fs::write(
        &target,
        SWEEP.replace("widths = [16, 32]", "widths = [48]").replace("tokens = [2048, 4096, 8192]", "tokens = [16384]"),
    )
    .unwrap();
    let pred_dir = dir.path().join("prediction");
    let (runs_arg, target_arg, pred_arg) =
        (out.to_str().unwrap(), target.to_str().unwrap(), pred_dir.to_str().unwrap());
    common::run_ok(&[
        "scaling",
        "predict",
        "--runs",
        runs_arg,
        "--target",
        target_arg,
        "--out",
        pred_arg,
        "--bootstrap",
        "10",
    ]);
    let reg: Value = serde_json::from_str(&std::fs::read_to_string(pred_dir.join("prediction.json")).unwrap()).unwrap();
    assert_eq!(reg["target"], "L1-W48-T16.38k");
    // The capability law's prediction for the target is registered with the loss's.
    let cap = &reg["capability"];
    assert_eq!(cap["families"].as_array().unwrap().len(), 10, "{reg}");
    assert!(cap["predicted"].as_f64().unwrap() > 0.0 && cap["interval"].is_array());
    let err = common::run_err(&["scaling", "predict", "--runs", runs_arg, "--target", target_arg, "--out", pred_arg]);
    assert!(err.contains("never replaced"), "{err}");
    let target_out = dir.path().join("target");
    common::run_ok(&["scaling", "sweep", "--config", target_arg, "--out", target_out.to_str().unwrap()]);
    let actual: Value =
        serde_json::from_str(std::fs::read_to_string(target_out.join("runs.jsonl")).unwrap().trim()).unwrap();
    assert_eq!(reg["target_compute"], actual["compute"], "the registered compute is the run's");
    common::run_ok(&[
        "scaling",
        "check",
        "--prediction",
        pred_dir.join("prediction.json").to_str().unwrap(),
        "--runs",
        target_out.to_str().unwrap(),
    ]);
    let outcome: Value =
        serde_json::from_str(&std::fs::read_to_string(pred_dir.join("outcome.json")).unwrap()).unwrap();
    assert_eq!(outcome["actual_loss"], actual["loss"]);
    assert!(outcome["inside_interval"].is_boolean() && pred_dir.join("outcome.png").exists());
    let logs = actual["log_pass_rates"].as_object().unwrap();
    let y = -logs.values().map(|v| v.as_f64().unwrap()).sum::<f64>() / 10.0;
    assert!((outcome["capability"]["actual"].as_f64().unwrap() - y).abs() < 1e-9, "{outcome}");
}

#[test]
fn infeasible_sweeps_fail_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[grid]\nwidths = [20]\ndepths = [1]\ntokens = [4096]\n", "infeasible shape"),
        ("[grid]\nwidths = [16]\ndepths = [1]\ntokens = [10]\n", "less than one step"),
        ("[grid]\nwidths = [16]\n", "no runs"),
        ("[grid]\nwidth = [16]\n", "unknown field"),
    ];
    for (i, (toml, expected)) in cases.iter().enumerate() {
        let cfg = dir.path().join(format!("s{i}.toml"));
        std::fs::write(&cfg, toml).unwrap();
        let out = dir.path().join(format!("o{i}"));
        let err =
            common::run_err(&["scaling", "sweep", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(err.contains(expected), "{toml}: {err}");
        assert!(!out.join("data").exists(), "nothing is prepared for an infeasible sweep");
    }
}

#[test]
fn a_ray_sweep_equals_the_local_one_and_resumes() {
    // A local Ray instance (Ray from the test venv), one CPU per run, against the local
    // executor with one thread per run: the same runs, so the same losses and pass rates.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sweep.toml");
    std::fs::write(
        &cfg,
        SWEEP.replace("widths = [16, 32]", "widths = [16]").replace("[2048, 4096, 8192]", "[2048, 4096]"),
    )
    .unwrap();
    let sweep = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let mut args = vec!["scaling", "sweep", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend(extra);
        let o = common::gptlab(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let rows: Vec<Value> = std::fs::read_to_string(out.join("runs.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (rows, String::from_utf8_lossy(&o.stderr).to_string())
    };
    let python = common::python();
    let ray = ["--executor", "ray", "--python", python.to_str().unwrap(), "--threads", "1"];
    let (local, _) = sweep("local", &["--jobs", "2", "--threads", "2"]);
    let (on_ray, log) = sweep("ray", &ray);
    assert!(log.contains("as Ray tasks (a local instance), 1 threads each"), "{log}");
    assert_eq!(local.len(), 2);
    for (a, b) in local.iter().zip(&on_ray) {
        for key in ["name", "loss", "val_curve", "pass_rates", "log_pass_rates", "compute"] {
            assert_eq!(a[key], b[key], "{key} of {}", a["name"]);
        }
    }
    // Finished runs are not trained again.
    let (again, log) = sweep("ray", &ray);
    assert!(log.contains("2 done before, 0 to train"), "{log}");
    assert_eq!(again, on_ray);
    // A Python without Ray is a one-line error naming the driver's log.
    let o = common::gptlab(&[
        "scaling",
        "sweep",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        dir.path().join("broken").to_str().unwrap(),
        "--executor",
        "ray",
        "--python",
        "/nonexistent/python",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--python names a Python with Ray"), "{err}");
}
