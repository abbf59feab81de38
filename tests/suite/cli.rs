//! The command line end to end: sampling with and without the KV cache, scoring, the quickstart,
//! and the error paths (one `error:` line, exit 1, no panic).

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::common::{run_err, run_ok, write_config};
use gptlab::checkpoint;
use gptlab::models::gpt::{Input, Pass};
use tch::{Device, Kind, Tensor};

/// A checkpoint trained for 8 steps, shared by the tests of this file.
fn trained_ckpt() -> &'static Path {
    static CKPT: OnceLock<PathBuf> = OnceLock::new();
    CKPT.get_or_init(|| {
        let dir = common::persistent_tempdir();
        run_ok(&["train", "--config", write_config(&dir, 8, "").to_str().unwrap()]);
        dir.join("run/checkpoint")
    })
}

fn copy_ckpt(to: &Path) -> PathBuf {
    let dst = to.join("ckpt");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(trained_ckpt()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

#[test]
fn greedy_sampling_is_the_same_with_and_without_the_kv_cache() {
    let ckpt = trained_ckpt().to_str().unwrap();
    // Longer than the 32-token context, so both the left cut and the sliding window run.
    let prompt = "the red circle is left of the blue square. there are 2 red objects. Q: What is 12 plus 30? A: 42";
    let args = |cache: bool| {
        let mut a = vec![
            "sample",
            "--ckpt",
            ckpt,
            "--prompt",
            prompt,
            "--temperature",
            "0",
            "--max-new-tokens",
            "24",
            "--device",
            "cpu",
        ];
        if !cache {
            a.push("--no-kv-cache");
        }
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| {
        let out = common::gptlab(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let (with_cache, warn) = run(args(true));
    let (without, _) = run(args(false));
    assert_eq!(with_cache, without);
    assert!(warn.contains("keeping the last 32"), "a long prompt warns: {warn}");
    // bf16 weights and matmuls decode too (the text may differ from fp32's; `run` checks the exit).
    let mut bf16 = args(true);
    bf16.extend(["--dtype".to_string(), "bf16".to_string()]);
    run(bf16);
}

#[test]
fn sampling_is_reproducible_in_its_seed_and_honours_stop() {
    let ckpt = trained_ckpt().to_str().unwrap();
    let base = [
        "sample",
        "--ckpt",
        ckpt,
        "--prompt",
        "a scene",
        "--temperature",
        "1.0",
        "--top-k",
        "20",
        "--top-p",
        "0.9",
        "--max-new-tokens",
        "30",
    ];
    let a = run_ok(&[&base[..], &["--seed", "1"]].concat());
    assert_eq!(a, run_ok(&[&base[..], &["--seed", "1"]].concat()));
    assert!(run_err(&["sample", "--ckpt", ckpt, "--prompt", "a", "--top-p", "0"]).contains("top-p"));
    assert!(run_err(&["sample", "--ckpt", ckpt, "--prompt", "a", "--temperature=-1"]).contains("temperature"));
    run_ok(&["sample", "--ckpt", ckpt, "--prompt", "", "--max-new-tokens", "4"]);
    let stopped = run_ok(&[&base[..], &["--seed", "1", "--stop", "e"]].concat());
    assert!(!stopped.trim_end_matches('\n').contains('e'), "{stopped:?}");
}

#[test]
fn score_gives_next_token_logprobs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"text\": \"the red circle\"}\n\n{\"tokens\": [5, 9, 17, 3]}\n").unwrap();
    let out = run_ok(&["score", "--ckpt", trained_ckpt().to_str().unwrap(), "--input", input.to_str().unwrap()]);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    let lp: Vec<f64> = lines[1]["token_logprobs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(lp.len(), 3);
    assert!((lp.iter().sum::<f64>() - lines[1]["total_logprob"].as_f64().unwrap()).abs() < 1e-9);
    // token_logprobs[i] = log P(token i+1 | tokens 0..=i), checked one prefix at a time.
    let loaded = checkpoint::load::<gptlab::models::gpt::Gpt>(trained_ckpt(), Device::Cpu).unwrap();
    let toks = [5i64, 9, 17, 3];
    for i in 0..3 {
        let x = Tensor::from_slice(&toks[..=i]).unsqueeze(0);
        let logits = loaded.model.forward(Input::Tokens(&x), Pass::default()).unwrap();
        let expect = logits.get(0).get(i as i64).log_softmax(0, Kind::Float).double_value(&[toks[i + 1]]);
        assert!((lp[i] - expect).abs() < 1e-5, "position {i}: {} vs {expect}", lp[i]);
    }
}

#[test]
fn broken_checkpoints_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sample = |ckpt: &Path| run_err(&["sample", "--ckpt", ckpt.to_str().unwrap(), "--prompt", "a"]);
    assert!(sample(&dir.path().join("nope")).contains("does not exist"));

    let ckpt = copy_ckpt(dir.path());
    let model = ckpt.join("model.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    assert!(sample(&ckpt).contains("corrupt or truncated"));
    std::fs::write(&model, b"not a safetensors file at all").unwrap();
    assert!(sample(&ckpt).contains("corrupt or truncated"));
    std::fs::remove_file(&model).unwrap();
    assert!(sample(&ckpt).contains("missing"));

    std::fs::write(&model, &bytes).unwrap();
    let config = ckpt.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("\"n_embd\": 48", "\"n_embd\": 64")).unwrap();
    assert!(sample(&ckpt).contains("but the config requires"));
    std::fs::write(&config, text.replace("\"n_layer\": 3", "\"n_layer\": 2")).unwrap();
    assert!(sample(&ckpt).contains("which the config does not define"));
    std::fs::write(&config, text.replace("\"n_head\": 4", "\"n_head\": 5")).unwrap();
    assert!(sample(&ckpt).contains("divisible"));
    std::fs::write(&config, "{ not json").unwrap();
    assert!(sample(&ckpt).contains("invalid"));
}

#[test]
fn bad_devices_and_inputs_are_clear_errors() {
    let ckpt = trained_ckpt().to_str().unwrap();
    assert!(run_err(&["sample", "--ckpt", ckpt, "--prompt", "a", "--device", "gpu"]).contains("unknown device"));
    if !tch::Cuda::is_available() {
        assert!(run_err(&["sample", "--ckpt", ckpt, "--prompt", "a", "--device", "cuda"]).contains("0 CUDA device"));
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    std::fs::write(&input, "{\"text\": \"ok\"}\n{\"text\": oops}\n").unwrap();
    let err = run_err(&["score", "--ckpt", ckpt, "--input", input.to_str().unwrap()]);
    assert!(err.contains("bad.jsonl:2"), "{err}");
    std::fs::write(&input, "{\"tokens\": [1, 99999]}\n").unwrap();
    assert!(run_err(&["score", "--ckpt", ckpt, "--input", input.to_str().unwrap()]).contains("outside the vocabulary"));
}

#[test]
fn empty_and_malformed_corpora_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    std::fs::write(corpus.join("train.jsonl"), "").unwrap();
    std::fs::write(corpus.join("val.jsonl"), "").unwrap();
    let tok = dir.path().join("tok.json");
    let err = run_err(&["tokenizer", "train", "--corpus", corpus.to_str().unwrap(), "--out", tok.to_str().unwrap()]);
    assert!(err.contains("no documents"), "{err}");
    std::fs::write(corpus.join("train.jsonl"), "{\"text\": \"fine\"}\n{\"txt\": \"wrong field\"}\n").unwrap();
    let err = run_err(&["tokenizer", "train", "--corpus", corpus.to_str().unwrap(), "--out", tok.to_str().unwrap()]);
    assert!(err.contains("train.jsonl:2"), "{err}");
    let bad = dir.path().join("import.jsonl");
    std::fs::write(&bad, "{\"text\": \"a\"}\n[1, 2\n").unwrap();
    let err = run_err(&["data", "import", "--out", dir.path().join("imp").to_str().unwrap(), bad.to_str().unwrap()]);
    assert!(err.contains("import.jsonl:2"), "{err}");
}

#[test]
fn data_synth_and_import_write_corpus_directories() {
    let dir = tempfile::tempdir().unwrap();
    let synth = dir.path().join("synth");
    run_ok(&["data", "synth", "--out", synth.to_str().unwrap(), "--docs", "200", "--seed", "3"]);
    let first = std::fs::read(synth.join("train.jsonl")).unwrap();
    run_ok(&["data", "synth", "--out", synth.to_str().unwrap(), "--docs", "200", "--seed", "3"]);
    assert_eq!(first, std::fs::read(synth.join("train.jsonl")).unwrap(), "deterministic in the seed");
    assert!(synth.join("synth.toml").exists());
    let txt = dir.path().join("notes.txt");
    std::fs::write(&txt, "first block\n\nsecond block\n").unwrap();
    let out = run_ok(&[
        "data",
        "import",
        "--out",
        dir.path().join("imp").to_str().unwrap(),
        "--txt-mode",
        "blocks",
        "--val-fraction",
        "0",
        txt.to_str().unwrap(),
    ]);
    assert!(out.contains("2 train"), "{out}");
}

#[test]
fn quickstart_trains_below_the_unigram_baseline_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("qs");
    run_ok(&[
        "quickstart",
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "150",
        "--docs",
        "4000",
        "--preset",
        "nano",
        "--clip-steps",
        "4",
        "--vlm-steps",
        "4",
        "--device",
        "cpu",
    ]);
    for f in [
        "report.md",
        "loss.png",
        "loss.svg",
        "metrics.jsonl",
        "samples.md",
        "config.toml",
        "checkpoint/model.safetensors",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let meta = gptlab::data::shards::ShardMeta::read(&out.join("data/shards")).unwrap();
    let records = gptlab::jsonl::read_jsonl(&out.join("metrics.jsonl")).unwrap();
    let val = records.iter().rev().find_map(|r| r["val_loss"].as_f64()).unwrap();
    assert!(val < meta.train_unigram_entropy - 1.0, "val loss {val} vs unigram {}", meta.train_unigram_entropy);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("![train and validation loss against tokens](loss.png)"));
    assert!(report.contains(&format!("{:.4}", meta.train_unigram_entropy)));
    assert!(report.contains(&format!("{val:.4}")));
    assert!(report.contains("CLIP on the synthetic image world") && report.contains("| colour |"));
    assert!(out.join("clip/eval/results.json").exists() && out.join("clip/checkpoint/model.safetensors").exists());
    assert!(report.contains("The multimodal GPT") && report.contains("gauge read from k examples"), "{report}");
    assert!(report.contains("![example questions with the model's answers](vlm/eval/examples.png)"));
    assert!(out.join("vlm/eval/results.json").exists() && out.join("vlm/eval/examples.png").exists());
}

#[test]
fn info_and_bench_report_sizes_and_throughput() {
    let info: serde_json::Value = serde_json::from_str(&run_ok(&["info", "--preset", "gpt2"])).unwrap();
    assert_eq!(info["n_total"].as_i64(), Some(124_439_808));
    assert_eq!(info["n_non_embedding"].as_i64(), Some(124_439_808 - 50257 * 768 - 1024 * 768));
    let info: serde_json::Value =
        serde_json::from_str(&run_ok(&["info", "--ckpt", trained_ckpt().to_str().unwrap()])).unwrap();
    assert_eq!(info["config"]["block_size"].as_i64(), Some(32));
    let bench: serde_json::Value = serde_json::from_str(&run_ok(&[
        "bench",
        "train",
        "--preset",
        "nano",
        "--batch-size",
        "2",
        "--steps",
        "2",
        "--device",
        "cpu",
        "--peak-tflops",
        "1",
    ]))
    .unwrap();
    assert!(bench["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(bench["mfu"].as_f64().unwrap() > 0.0);
    let peak: serde_json::Value = serde_json::from_str(&run_ok(&["bench", "peak", "--device", "cpu"])).unwrap();
    for dtype in ["fp32", "bf16"] {
        assert!(peak["peak_tflops"][dtype].as_f64().unwrap() > 0.0, "{peak}");
    }
    assert!(run_err(&["bench", "train", "--device", "cpu", "--dtype", "fp16"]).contains("unknown dtype"));
    // Decoding: exactly --new-tokens per row, with the lower bound measured beside it.
    let gen: serde_json::Value = serde_json::from_str(&run_ok(&[
        "bench",
        "generate",
        "--ckpt",
        trained_ckpt().to_str().unwrap(),
        "--batch-size",
        "2",
        "--prompt-tokens",
        "4",
        "--new-tokens",
        "8",
        "--runs",
        "1",
    ]))
    .unwrap();
    for key in ["prefill_ms", "decode_ms_per_token", "matvec_ms_per_token", "bandwidth_gb_s", "ratio_to_bound"] {
        assert!(gen[key].as_f64().unwrap() > 0.0, "{key}: {gen}");
    }
    assert_eq!((gen["batch_size"].as_i64(), gen["new_tokens"].as_i64()), (Some(2), Some(8)));
    // The trained checkpoint's context is 32.
    let err = run_err(&["bench", "generate", "--ckpt", trained_ckpt().to_str().unwrap(), "--new-tokens", "40"]);
    assert!(err.contains("must fit the context of 32"), "{err}");
}

#[test]
fn sequences_longer_than_the_context_are_scored_in_rolling_windows() {
    let loaded = checkpoint::load::<gptlab::models::gpt::Gpt>(trained_ckpt(), Device::Cpu).unwrap();
    let toks: Vec<i64> = (0..75).map(|i| (i * 7 + 3) % 300).collect(); // context is 32
    let scored = gptlab::infer::score::score_tokens(&loaded.model, &toks).unwrap();
    assert_eq!(scored.token_logprobs.len(), 74);
    // The first window is one plain pass; tokens 32..48 come from the window 16..48, so token 40
    // is predicted from tokens 16..40.
    let first = gptlab::infer::score::score_tokens(&loaded.model, &toks[..32]).unwrap();
    assert_eq!(&scored.token_logprobs[..31], &first.token_logprobs[..]);
    let x = Tensor::from_slice(&toks[16..48]).unsqueeze(0);
    let logits = loaded.model.forward(Input::Tokens(&x), Pass::default()).unwrap();
    let expect = logits.get(0).get(23).log_softmax(0, Kind::Float).double_value(&[toks[40]]);
    assert!((scored.token_logprobs[39] - expect).abs() < 1e-5, "{} vs {expect}", scored.token_logprobs[39]);
}

#[test]
fn synth_images_writes_a_deterministic_world() {
    let dir = tempfile::tempdir().unwrap();
    let world = |name: &str| {
        let out = dir.path().join(name);
        run_ok(&["data", "synth-images", "--out", out.to_str().unwrap(), "--n", "6", "--seed", "4", "--side", "32"]);
        out
    };
    let (a, b) = (world("a"), world("b"));
    for f in ["images/000000.png", "images/000005.png", "captions.jsonl", "scenes.jsonl"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} differs");
    }
    let scenes = gptlab::jsonl::read_jsonl(&a.join("scenes.jsonl")).unwrap();
    assert_eq!(scenes.len(), 6);
    for line in gptlab::jsonl::read_jsonl(&a.join("captions.jsonl")).unwrap() {
        assert!(a.join(line["image"].as_str().unwrap()).exists());
        assert!(!line["caption"].as_str().unwrap().is_empty());
    }
    let bad = dir.path().join("world.toml");
    std::fs::write(&bad, "max_objects = 99\n").unwrap();
    let err = run_err(&[
        "data",
        "synth-images",
        "--out",
        dir.path().join("c").to_str().unwrap(),
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert!(err.contains("max_objects"), "{err}");
}

#[test]
fn a_checkpoint_of_the_wrong_family_is_named_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let clip_dir = dir.path().join("clip");
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let cfg = gptlab_vision::clip::ClipConfig::preset("tiny", 300, 0).unwrap();
    gptlab_vision::clip::Clip::new(&cfg, vs.root()).unwrap();
    checkpoint::save_model(&clip_dir, &vs, &cfg, None).unwrap();
    let (clip, gpt) = (clip_dir.to_str().unwrap(), trained_ckpt().to_str().unwrap());
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"tokens\": [1, 2]}\n").unwrap();
    let input = input.to_str().unwrap();
    for args in [
        vec!["sample", "--ckpt", clip, "--prompt", "a"],
        vec!["score", "--ckpt", clip, "--input", input],
        vec!["info", "--ckpt", clip],
    ] {
        let err = run_err(&args);
        assert!(err.ends_with("is a CLIP checkpoint, not a GPT checkpoint"), "{err}");
    }
    let eval_out = dir.path().join("eval");
    for args in [
        vec!["clip", "embed", "--ckpt", gpt, "--input", input],
        vec!["clip", "eval", "--ckpt", gpt, "--out", eval_out.to_str().unwrap()],
    ] {
        let err = run_err(&args);
        assert!(err.ends_with("is a GPT checkpoint, not a CLIP checkpoint"), "{err}");
    }
    let tagged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(trained_ckpt().join("config.json")).unwrap()).unwrap();
    assert_eq!(tagged["family"], "gpt");
}

#[test]
fn token_ids_score_without_a_tokenizer_and_text_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = copy_ckpt(dir.path());
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"tokens\": [5, 9, 17, 3]}\n").unwrap();
    let with = run_ok(&["score", "--ckpt", ckpt.to_str().unwrap(), "--input", input.to_str().unwrap()]);
    std::fs::remove_file(ckpt.join("tokenizer.json")).unwrap();
    let without = run_ok(&["score", "--ckpt", ckpt.to_str().unwrap(), "--input", input.to_str().unwrap()]);
    assert_eq!(with, without);
    std::fs::write(&input, "{\"tokens\": [5, 9]}\n{\"text\": \"the red circle\"}\n").unwrap();
    let err = run_err(&["score", "--ckpt", ckpt.to_str().unwrap(), "--input", input.to_str().unwrap()]);
    assert!(err.contains("record 2") && err.contains("tokenizer.json"), "{err}");
    let err = run_err(&["sample", "--ckpt", ckpt.to_str().unwrap(), "--prompt", "a"]);
    assert!(err.contains("no tokenizer.json"), "{err}");
}

#[test]
fn batched_cli_sampling_and_scoring_equal_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = trained_ckpt().to_str().unwrap();
    let prompts = ["the red circle", "Q: What is 12 plus 30? A:", "a", "there are 2 objects: a large blue square"];
    let input = dir.path().join("prompts.jsonl");
    let lines: String = prompts.iter().map(|p| serde_json::json!({ "prompt": p }).to_string() + "\n").collect();
    std::fs::write(&input, lines).unwrap();
    let greedy = ["--temperature", "0", "--max-new-tokens", "12", "--stop", "."];
    let out = run_ok(
        &[&["sample", "--ckpt", ckpt, "--input", input.to_str().unwrap(), "--batch-size", "3"][..], &greedy].concat(),
    );
    let batched: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(batched.len(), prompts.len());
    for (p, b) in prompts.iter().zip(&batched) {
        let alone = run_ok(&[&["sample", "--ckpt", ckpt, "--prompt", p][..], &greedy].concat());
        assert_eq!(alone.strip_suffix('\n').unwrap(), b["completion"].as_str().unwrap(), "prompt {p:?}");
    }
    std::fs::write(&input, "{\"text\": \"the red circle\"}\n{\"tokens\": [5, 9, 17, 3]}\n{\"text\": \"a\"}\n").unwrap();
    let score = |b: &str| -> Vec<Vec<f64>> {
        run_ok(&["score", "--ckpt", ckpt, "--input", input.to_str().unwrap(), "--batch-size", b])
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["token_logprobs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect()
            })
            .collect()
    };
    let (one, three) = (score("1"), score("3"));
    assert_eq!(one.len(), 3);
    for (a, b) in one.iter().flatten().zip(three.iter().flatten()) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    std::fs::write(&input, "{\"text\": \"no prompt key\"}\n").unwrap();
    assert!(run_err(&["sample", "--ckpt", ckpt, "--input", input.to_str().unwrap()]).contains("record 1"));
}

#[test]
fn the_gpu_check_script_runs_end_to_end_in_smoke_mode() {
    // GPU_CHECK_SMOKE runs every step of scripts/gpu_check.sh on CPU with tiny models, so the
    // script a GPU session runs unchanged is known to work before the GPU is paid for.
    let out = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = std::process::Command::new("bash")
        .arg(root.join("scripts/gpu_check.sh"))
        .arg(out.path())
        .arg(env!("CARGO_BIN_EXE_gptlab"))
        .env("GPU_CHECK_SMOKE", "1")
        .env("PYTHON", common::python())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(out.path().join("gpu_check.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let check = |name: &str| rows.iter().find(|r| r["check"] == name).unwrap_or_else(|| panic!("{name} missing"));
    assert!(check("train_bf16")["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(check("clip_bf16")["pairs_per_s"].as_f64().unwrap() > 0.0);
    for name in ["generate_fp32_b1", "generate_fp32_b2", "generate_bf16_b1", "generate_bf16_b2"] {
        assert!(check(name)["decode_ms_per_token"].as_f64().unwrap() > 0.0, "{name}");
    }
    assert_eq!(check("resume")["ok"], true, "{:?}", check("resume"));
    let table = std::fs::read_to_string(out.path().join("gpu_check.md")).unwrap();
    assert!(table.contains("| resume | max_abs_diff"), "{table}");
}
