//! The defects a hostile run of bad inputs and faults found (issue 10), each reproduced: every
//! one ends in one `error:` line and exit 1, a warning, or a quiet end, never a panic or a silent
//! exit 0 on nonsense.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::common::{self, run_err, run_ok, write_config};
use gptlab::checkpoint;

/// A GPT trained for 4 steps on the shared shards.
fn gpt_ckpt() -> &'static Path {
    static CKPT: OnceLock<PathBuf> = OnceLock::new();
    CKPT.get_or_init(|| {
        let dir = common::persistent_tempdir();
        run_ok(&["train", "--config", write_config(&dir, 4, "").to_str().unwrap()]);
        dir.join("run/checkpoint")
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A tiny CLIP checkpoint with the shared shards' tokenizer (400 ids, end-of-text 0).
fn clip_ckpt(dir: &Path) -> PathBuf {
    let ckpt = dir.join("clip");
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let cfg = gptlab_vision::clip::ClipConfig::preset("tiny", 400, 0).unwrap();
    gptlab_vision::clip::Clip::new(&cfg, vs.root()).unwrap();
    let tok = common::shard_dir().join("tokenizer.json");
    checkpoint::save_model(&ckpt, &vs, &cfg, Some(&tok)).unwrap();
    ckpt
}

fn jsonl(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn a_closed_stdout_ends_quietly_instead_of_panicking() {
    let input = jsonl(&common::persistent_tempdir(), "many.jsonl", &"{\"tokens\": [5, 9, 17, 3]}\n".repeat(400));
    for args in [
        vec!["info", "--preset", "gpt2"],
        vec!["score", "--ckpt", gpt_ckpt().to_str().unwrap(), "--input", input.to_str().unwrap(), "--batch-size", "1"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gptlab"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read one byte, then close the pipe, as `| head -c 1` would.
        let mut first = [0u8; 1];
        let mut stdout = child.stdout.take().unwrap();
        stdout.read_exact(&mut first).unwrap();
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("internal error") && !stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}");
        assert_ne!(out.status.code(), Some(1), "{args:?}: {stderr}");
    }
}

#[test]
fn negative_numbers_and_hyphenated_prompts_reach_gptlab_not_clap() {
    let ckpt = gpt_ckpt().to_str().unwrap();
    let err = run_err(&["sample", "--ckpt", ckpt, "--prompt", "a", "--temperature", "-1"]);
    assert!(err.contains("temperature must be >= 0"), "{err}");
    run_ok(&["sample", "--ckpt", ckpt, "--prompt", "-5 plus 3", "--max-new-tokens", "2", "--temperature", "0"]);
}

#[test]
fn ambiguous_and_empty_records_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let both = jsonl(dir.path(), "both.jsonl", "{\"text\": \"a\", \"tokens\": [1, 2]}\n");
    let err = run_err(&["score", "--ckpt", gpt_ckpt().to_str().unwrap(), "--input", both.to_str().unwrap()]);
    assert!(err.contains("record 1") && err.contains("both"), "{err}");
    let clip = clip_ckpt(dir.path());
    let clip = clip.to_str().unwrap();
    for (body, expect) in [
        ("{\"text\": \"a red circle\", \"image\": \"x.png\"}\n", "has image and text"),
        ("{\"text\": \"a\", \"tokens\": [1, 0]}\n", "has text and tokens"),
        ("{\"tokens\": []}\n", "\"tokens\" is empty"),
    ] {
        let input = jsonl(dir.path(), "embed.jsonl", body);
        let err = run_err(&["clip", "embed", "--ckpt", clip, "--input", input.to_str().unwrap()]);
        assert!(err.contains("record 1") && err.contains(expect), "{body}: {err}");
    }
    // Text longer than the 32-token context embeds its first 32 tokens, and says so.
    let long = jsonl(dir.path(), "long.jsonl", &format!("{{\"text\": \"{}\"}}\n", "a red circle and ".repeat(20)));
    let out = common::gptlab(&["clip", "embed", "--ckpt", clip, "--input", long.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the model reads the first 32"));
    let err = run_err(&["clip", "eval", "--ckpt", clip, "--out", dir.path().join("e").to_str().unwrap(), "--n", "0"]);
    assert!(err.contains("--n must be at least 2"), "{err}");
}

#[test]
fn optimizer_settings_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), 4, "grad_clip = -1");
    assert!(run_err(&["train", "--config", cfg.to_str().unwrap()]).contains("grad_clip must be >= 0"));
    let cfg = write_config(dir.path(), 4, "");
    std::fs::write(&cfg, std::fs::read_to_string(&cfg).unwrap() + "\n[optim]\nbeta2 = 1.5\n").unwrap();
    assert!(run_err(&["train", "--config", cfg.to_str().unwrap()]).contains("optim.beta2 must be in [0, 1)"));
}

#[test]
fn weights_with_nan_are_refused_at_load_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    copy_dir(gpt_ckpt(), &ckpt);
    let file = ckpt.join(checkpoint::MODEL_FILE);
    let mut tensors = checkpoint::read_tensors(&file).unwrap();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let (name, t) = tensors.iter_mut().find(|(n, _)| n == "transformer.h.1.mlp.c_fc.weight").unwrap();
    let _ = t.get(0).get(3).fill_(f64::NAN);
    let name = name.clone();
    checkpoint::write_safetensors(&tensors, &file).unwrap();
    let err = run_err(&["sample", "--ckpt", ckpt.to_str().unwrap(), "--prompt", "a"]);
    assert!(err.contains(&name) && err.contains("NaN or infinite"), "{err}");
}

#[test]
fn a_tokenizer_of_another_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    copy_dir(gpt_ckpt(), &ckpt); // 400-token tokenizer, 448 embedding rows
    let texts: Vec<String> = (0..200).map(|i| format!("document {i} about red circles and blue squares")).collect();
    for vocab in [300, 500] {
        gptlab::tokenizer::Tokenizer::train(texts.iter(), vocab, &ckpt.join("tokenizer.json")).unwrap();
        let err = run_err(&["sample", "--ckpt", ckpt.to_str().unwrap(), "--prompt", "a"]);
        assert!(err.contains("the tokenizer does not belong to this model"), "{vocab}: {err}");
    }
}

#[test]
fn fits_that_would_write_nan_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = vec!["name,n_params,n_params_non_embedding,n_tokens,loss".to_string()];
    for i in 0..8 {
        let (n, d) = (1e6 * (i + 1) as f64, 1e8 * (8 - i) as f64);
        lines.push(format!("r{i},{n},{},{d},{}", 0.8 * n, 1.7 + 400.0 / n.powf(0.34) + 400.0 / d.powf(0.28)));
    }
    let table = jsonl(dir.path(), "runs.csv", &(lines.join("\n") + "\n"));
    let fit = |extra: &[&str]| {
        let mut args =
            vec!["scaling", "fit", "--table", table.to_str().unwrap(), "--out", dir.path().to_str().unwrap()];
        args.extend_from_slice(extra);
        run_err(&args)
    };
    assert!(fit(&["--bootstrap", "0"]).contains("--bootstrap must be at least 2"));
    assert!(fit(&["--predict-compute", "-1e14"]).contains("--predict-compute must be a positive"));
}

#[test]
fn shards_that_disagree_with_their_meta_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let train = |shards: &Path| {
        let cfg = write_config(dir.path(), 2, "");
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace(&common::shard_dir().display().to_string(), &shards.display().to_string());
        std::fs::write(&cfg, text).unwrap();
        run_err(&["train", "--config", cfg.to_str().unwrap()])
    };
    // A validation shard shorter than meta.json says.
    let short = dir.path().join("short");
    copy_dir(common::shard_dir(), &short);
    let val = short.join("val_000.bin");
    let bytes = std::fs::read(&val).unwrap();
    std::fs::write(&val, &bytes[..bytes.len() - 64]).unwrap();
    let err = train(&short);
    assert!(err.contains("val shards") && err.contains("meta.json says"), "{err}");
    // u16 data declared u32.
    let wide = dir.path().join("wide");
    copy_dir(common::shard_dir(), &wide);
    let meta = wide.join("meta.json");
    std::fs::write(&meta, std::fs::read_to_string(&meta).unwrap().replace("\"u16\"", "\"u32\"")).unwrap();
    let err = train(&wide);
    assert!(err.contains("meta.json says") || err.contains("truncated"), "{err}");
    // Ids outside the tokenizer's vocabulary.
    let bad = dir.path().join("bad");
    copy_dir(common::shard_dir(), &bad);
    let shard = bad.join("train_000.bin");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[10..12].copy_from_slice(&60_000u16.to_le_bytes());
    std::fs::write(&shard, bytes).unwrap();
    let err = train(&bad);
    assert!(err.contains("token id 60000") && err.contains("train_000.bin"), "{err}");
}

#[test]
fn an_out_dir_in_use_by_another_run_is_refused_naming_its_pid() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let lock = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(run_dir.join(".lock")).unwrap();
    lock.try_lock().unwrap();
    std::fs::write(run_dir.join(".lock"), "4242").unwrap();
    let cfg = write_config(dir.path(), 2, "");
    let err = run_err(&["train", "--config", cfg.to_str().unwrap()]);
    assert!(err.contains("in use by another gptlab run (pid 4242)"), "{err}");
    drop(lock);
    run_ok(&["train", "--config", cfg.to_str().unwrap()]);
}

#[test]
fn the_first_loss_after_a_resume_says_how_many_steps_it_averages() {
    let dir = tempfile::tempdir().unwrap();
    // Checkpoints every 3 steps, a line every 2: the resume at step 3 logs step 4 after 1 step.
    let cfg = |steps| {
        let path = write_config(dir.path(), steps, "");
        let text = std::fs::read_to_string(&path).unwrap().replace("ckpt_interval = 4", "ckpt_interval = 3");
        std::fs::write(&path, text).unwrap();
        path
    };
    run_ok(&["train", "--config", cfg(3).to_str().unwrap()]);
    run_ok(&["train", "--config", cfg(6).to_str().unwrap(), "--resume"]);
    let metrics = gptlab::jsonl::read_jsonl(&dir.path().join("run/metrics.jsonl")).unwrap();
    let counts: Vec<(u64, u64)> =
        metrics.iter().map(|r| (r["step"].as_u64().unwrap(), r["train_loss_steps"].as_u64().unwrap())).collect();
    assert_eq!(counts, [(2, 2), (3, 1), (4, 1), (6, 2)]);
}

#[test]
fn an_image_over_the_size_limit_is_named_with_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("wide.png");
    gptlab_vision::image::GrayImage::new(10_000, 1).save(&png).unwrap();
    let err = gptlab_vision::transform::load_image(&png).unwrap_err().to_string();
    assert!(err.contains("10000x1 pixels") && err.contains("8192"), "{err}");
}

/// A corpus, two different tokenizers of it, and shards made with the first, in `dir`.
fn corpus_and_tokenizers(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let corpus = dir.join("corpus");
    run_ok(&["data", "synth", "--out", corpus.to_str().unwrap(), "--docs", "600", "--seed", "3"]);
    let (tok_a, tok_b) = (dir.join("a.json"), dir.join("b.json"));
    for (tok, vocab) in [(&tok_a, "300"), (&tok_b, "320")] {
        let (corpus, tok) = (corpus.to_str().unwrap(), tok.to_str().unwrap());
        run_ok(&["tokenizer", "train", "--corpus", corpus, "--vocab-size", vocab, "--out", tok]);
    }
    let shards = dir.join("shards");
    run_ok(&[
        "data",
        "tokenize",
        "--corpus",
        corpus.to_str().unwrap(),
        "--tokenizer",
        tok_a.to_str().unwrap(),
        "--out",
        shards.to_str().unwrap(),
    ]);
    (corpus, tok_a, tok_b, shards)
}

#[test]
fn shards_are_not_overwritten_and_a_resume_refuses_another_tokenizer_or_model() {
    let dir = tempfile::tempdir().unwrap();
    let (corpus, _, tok_b, shards) = corpus_and_tokenizers(dir.path());
    let (corpus, tok_b, out) = (corpus.to_str().unwrap(), tok_b.to_str().unwrap(), shards.to_str().unwrap());
    let tokenize = ["data", "tokenize", "--corpus", corpus, "--tokenizer", tok_b, "--out", out];
    let err = run_err(&tokenize);
    assert!(err.contains("already holds shards") && err.contains("--force"), "{err}");
    // Train 2 steps on the first tokenizer's shards.
    let cfg = write_config(dir.path(), 2, "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(&common::shard_dir().display().to_string(), out);
    std::fs::write(&cfg, &text).unwrap();
    run_ok(&["train", "--config", cfg.to_str().unwrap()]);
    let cfg4 = dir.path().join("train_4.toml");
    std::fs::write(&cfg4, text.replace("max_steps = 2", "max_steps = 4")).unwrap();
    // Another preset on resume: refused, naming the key.
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        text.replace("max_steps = 2", "max_steps = 4").replace("preset = \"nano\"", "preset = \"nano\"\nn_layer = 2"),
    )
    .unwrap();
    let err = run_err(&["train", "--config", other.to_str().unwrap(), "--resume"]);
    assert!(
        err.contains("n_layer = 3") && err.contains("n_layer = 2") && err.contains("cannot change the model"),
        "{err}"
    );
    // Re-tokenized with another tokenizer (forced): the resume is refused, and the checkpoint's
    // tokenizer is not replaced.
    let before = std::fs::read(dir.path().join("run/checkpoint/tokenizer.json")).unwrap();
    run_ok(&[&tokenize[..], &["--force"]].concat());
    let err = run_err(&["train", "--config", cfg4.to_str().unwrap(), "--resume"]);
    assert!(err.contains("another tokenizer"), "{err}");
    assert_eq!(std::fs::read(dir.path().join("run/checkpoint/tokenizer.json")).unwrap(), before);
}

#[test]
fn exports_and_imports_never_destroy_a_checkpoint_or_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    copy_dir(gpt_ckpt(), &ckpt);
    let before: Vec<(String, Vec<u8>)> = std::fs::read_dir(&ckpt)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    let (c, hf) = (ckpt.to_str().unwrap(), dir.path().join("hf"));
    let hf_s = hf.to_str().unwrap();
    // Into itself, or a folder that holds it: refused.
    for out in [c, dir.path().to_str().unwrap()] {
        let err = run_err(&["export", "hf-gpt2", "--ckpt", c, "--out", out]);
        assert!(err.contains("it is or holds the input"), "{err}");
    }
    // Into another trained checkpoint or an unrelated folder: refused, even with --force.
    let other = dir.path().join("other");
    copy_dir(gpt_ckpt(), &other);
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::write(photos.join("cat.jpg"), b"...").unwrap();
    for out in [&other, &photos] {
        let err = run_err(&["export", "hf-gpt2", "--ckpt", c, "--out", out.to_str().unwrap(), "--force"]);
        assert!(err.contains("is not an HF GPT-2 export"), "{err}");
        let err = run_err(&["import", "hf-gpt2", "--from", c, "--out", out.to_str().unwrap(), "--force"]);
        assert!(err.contains("is not an imported GPT checkpoint"), "{err}");
    }
    assert!(other.join("optimizer.safetensors").exists() && photos.join("cat.jpg").exists());
    // A second export over the first needs --force; so does a second import.
    run_ok(&["export", "hf-gpt2", "--ckpt", c, "--out", hf_s]);
    assert!(run_err(&["export", "hf-gpt2", "--ckpt", c, "--out", hf_s]).contains("pass --force"));
    run_ok(&["export", "hf-gpt2", "--ckpt", c, "--out", hf_s, "--force"]);
    assert!(!dir.path().join("hf.tmp").exists() && !dir.path().join("hf.old").exists());
    let imported = dir.path().join("imported");
    run_ok(&["import", "hf-gpt2", "--from", hf_s, "--out", imported.to_str().unwrap()]);
    assert!(
        run_err(&["import", "hf-gpt2", "--from", hf_s, "--out", imported.to_str().unwrap()]).contains("pass --force")
    );
    run_ok(&["import", "hf-gpt2", "--from", hf_s, "--out", imported.to_str().unwrap(), "--force"]);
    // The source checkpoint is byte for byte what it was, and still samples.
    for (name, bytes) in before {
        assert_eq!(std::fs::read(ckpt.join(&name)).unwrap(), bytes, "{name} changed");
    }
    run_ok(&["sample", "--ckpt", c, "--prompt", "a", "--max-new-tokens", "2"]);
}
