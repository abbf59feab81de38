//! Shared fixtures: the CLI binary, a small tokenized synthetic corpus, tiny training configs,
//! and the project's Python (`.venv`) for comparisons against HF.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use gptlab::data::shards;
use gptlab::synth::{self, SynthConfig};
use gptlab::tokenizer::Tokenizer;
use tch::Tensor;

pub fn gptlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gptlab")).args(args).output().expect("running gptlab")
}

/// Runs gptlab and returns stdout, failing the test with stderr on a non-zero exit.
pub fn run_ok(args: &[&str]) -> String {
    let out = gptlab(args);
    assert!(out.status.success(), "gptlab {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs gptlab expecting a clean failure: non-zero exit and one `error: ` line, no panic.
pub fn run_err(args: &[&str]) -> String {
    let out = gptlab(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "gptlab {args:?} should have failed; stderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "expected exit code 1 for {args:?}, stderr:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "expected one error line for {args:?}, stderr:\n{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("internal error"), "panic for {args:?}:\n{stderr}");
    errors[0].to_string()
}

/// A temp dir that lives for the whole test binary.
pub fn persistent_tempdir() -> PathBuf {
    tempfile::tempdir().unwrap().keep()
}

/// A small synthetic corpus, tokenizer and shards, built once per test binary.
pub fn shard_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = persistent_tempdir();
        let cfg = SynthConfig { docs: 1500, seed: 7, ..SynthConfig::default() };
        let corpus = synth::generate(&cfg).unwrap();
        let corpus_dir = root.join("corpus");
        synth::write_corpus(&corpus_dir, &corpus, &cfg).unwrap();
        let tok = root.join("tokenizer.json");
        Tokenizer::train(corpus.train.iter().map(|d| d.text.as_str()), 400, &tok).unwrap();
        let out = root.join("shards");
        shards::tokenize_corpus(&corpus_dir, &tok, &out, shards::DEFAULT_SHARD_TOKENS, false).unwrap();
        out
    })
}

/// A nano training config over [`shard_dir`], with dropout so that exact resume must also
/// restore the RNG. `extra` is appended to the `[train]` table.
pub fn write_config(dir: &Path, max_steps: u64, extra: &str) -> PathBuf {
    let path = dir.join(format!("train_{max_steps}.toml"));
    std::fs::write(&path, nano_config(&dir.join("run"), max_steps, 0.1, &format!("log_interval = 2\n{extra}")))
        .unwrap();
    path
}

/// The text of a nano GPT run into `out_dir` over [`shard_dir`] on the CPU; `extra` is
/// appended to the `[train]` table.
pub fn nano_config(out_dir: &Path, max_steps: u64, dropout: f64, extra: &str) -> String {
    format!(
        r#"out_dir = "{out}"
data = "{data}"

[model]
preset = "nano"
block_size = 32
dropout = {dropout}

[train]
batch_size = 4
max_steps = {max_steps}
decay_steps = 8
warmup_steps = 2
lr = 3e-3
eval_interval = 4
eval_batches = 2
ckpt_interval = 4
device = "cpu"
threads = 1
peak_tflops = 1.0
{extra}
"#,
        out = out_dir.display(),
        data = shard_dir().display()
    )
}

/// The project's Python with torch, transformers and tokenizers (installed by scripts/setup.sh).
pub fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(p.exists(), "{} is missing: run scripts/setup.sh (the README's test command does)", p.display());
    p
}

pub fn run_python(args: &[&str]) -> String {
    let out = Command::new(python()).args(args).output().expect("running python");
    assert!(out.status.success(), "python {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A safetensors file's tensors, sorted by name.
pub fn tensors(path: &Path) -> Vec<(String, Tensor)> {
    let mut t = Tensor::read_safetensors(path).unwrap();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

/// Two safetensors files hold the same tensors, equal within 1e-6.
pub fn assert_same(a: &Path, b: &Path) {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(ta.len(), tb.len());
    for ((na, xa), (nb, xb)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        let diff = (xa - xb).abs().max().double_value(&[]);
        assert!(diff <= 1e-6, "{na} differs by {diff} between {} and {}", a.display(), b.display());
    }
}
