//! Training runs: exact resume, atomic checkpoints, NaN stops, metrics, mixed precision, and the
//! Trainer driven by an objective from outside the crate.

use std::path::Path;

use crate::common::{assert_same, run_err, run_ok, tensors, write_config};
use gptlab::checkpoint;
use gptlab::models::gpt::{lm_loss, GptConfig, Input, Pass};
use gptlab::train::optim::AdamWConfig;
use gptlab::train::trainer::{run, Evaluate, MicroLoss, Objective, RunParts, Setup, Trainer, ValMetrics};
use gptlab::train::TrainSection;
use tch::{Kind, Tensor};

#[test]
fn resume_continues_exactly() {
    let straight = tempfile::tempdir().unwrap();
    let split = tempfile::tempdir().unwrap();
    run_ok(&["train", "--config", write_config(straight.path(), 8, "").to_str().unwrap()]);
    run_ok(&["train", "--config", write_config(split.path(), 4, "").to_str().unwrap()]);
    let half = checkpoint::read_state::<gptlab::train::TrainState>(&split.path().join("run/checkpoint")).unwrap();
    assert_eq!(half.step, 4);
    assert_eq!(half.sampler.next_batch, 4);
    run_ok(&["train", "--config", write_config(split.path(), 8, "").to_str().unwrap(), "--resume"]);
    let (a, b) = (straight.path().join("run/checkpoint"), split.path().join("run/checkpoint"));
    assert_same(&a.join("model.safetensors"), &b.join("model.safetensors"));
    assert_same(&a.join("optimizer.safetensors"), &b.join("optimizer.safetensors"));
    assert_eq!(
        checkpoint::read_state::<gptlab::train::TrainState>(&a).unwrap(),
        checkpoint::read_state::<gptlab::train::TrainState>(&b).unwrap()
    );
    // The resumed log holds each step once, as the straight run's does.
    let steps = |dir: &Path| -> Vec<u64> {
        gptlab::jsonl::read_jsonl(&dir.join("run/metrics.jsonl"))
            .unwrap()
            .iter()
            .map(|r| r["step"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(steps(straight.path()), vec![2, 4, 6, 8]);
    assert_eq!(steps(split.path()), vec![2, 4, 6, 8]);
    assert!(split.path().join("run/config.toml").exists(), "the resolved config is written next to the outputs");
}

#[test]
fn metrics_record_losses_and_throughput() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(&["train", "--config", write_config(dir.path(), 8, "").to_str().unwrap()]);
    let records = gptlab::jsonl::read_jsonl(&dir.path().join("run/metrics.jsonl")).unwrap();
    let last = records.last().unwrap();
    for key in ["step", "tokens", "lr", "train_loss", "val_loss", "grad_norm", "tokens_per_s", "mfu"] {
        assert!(last[key].is_number(), "{key} missing in {last}");
    }
    assert_eq!(last["tokens"].as_u64(), Some(8 * 4 * 32));
    // FLOPs of the positions processed: 4 windows of 32 tokens, each token
    // 6 (N_total - wpe) + 12 L H D T = 6 * (3 * 28272 + 96 + 448 * 48) + 12 * 3 * 4 * 12 * 32
    // (nano with the 400-token tokenizer's vocab padded to 448 and a 32-token context).
    let per_token = 6.0 * (3.0 * 28272.0 + 96.0 + 448.0 * 48.0) + 12.0 * 3.0 * 4.0 * 12.0 * 32.0;
    assert_eq!(last["flops_per_step"].as_f64(), Some(4.0 * 32.0 * per_token));
    assert!(records[0]["val_loss"].is_null(), "val loss only on eval steps");
    let ckpt = dir.path().join("run/checkpoint");
    for f in ["model.safetensors", "config.json", "optimizer.safetensors", "state.json", "tokenizer.json"] {
        assert!(ckpt.join(f).exists(), "{f} missing from the checkpoint");
    }
    let cfg = dir.path().join("train_8.toml");
    assert!(run_err(&["train", "--config", cfg.to_str().unwrap(), "--resume"]).contains("already at step 8"));
    // A fresh run never silently replaces an existing one.
    assert!(run_err(&["train", "--config", cfg.to_str().unwrap()]).contains("already holds a checkpoint"));
}

#[test]
fn interrupted_saves_leave_the_previous_checkpoint_loadable() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(&["train", "--config", write_config(dir.path(), 4, "").to_str().unwrap()]);
    let ckpt = dir.path().join("run/checkpoint");
    let before = tensors(&ckpt.join("model.safetensors"));

    // Killed between writing the temp directory and the first rename: a half-written tmp.
    let tmp = dir.path().join("run/checkpoint.tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("model.safetensors"), b"partial").unwrap();
    let loaded = checkpoint::load::<gptlab::models::gpt::Gpt>(&ckpt, tch::Device::Cpu).unwrap();
    assert_eq!(loaded.dir, ckpt);

    // Killed between the two renames: only checkpoint.old is complete.
    std::fs::rename(&ckpt, dir.path().join("run/checkpoint.old")).unwrap();
    let loaded = checkpoint::load::<gptlab::models::gpt::Gpt>(&ckpt, tch::Device::Cpu).unwrap();
    assert!(loaded.dir.ends_with("checkpoint.old"));
    let after = checkpoint::model_tensors(&loaded.vs);
    for ((n1, a), (n2, b)) in before.iter().zip(&after) {
        assert_eq!(n1, n2);
        assert!(a.equal(b));
    }
    // A metrics line cut short by the kill does not block the resume.
    let metrics = dir.path().join("run/metrics.jsonl");
    let mut text = std::fs::read_to_string(&metrics).unwrap();
    text.push_str("{\"step\": 5, \"tok");
    std::fs::write(&metrics, text).unwrap();
    // Resuming with another batch size would change the batch stream: refused.
    let other = write_config(dir.path(), 8, "").to_str().unwrap().to_string();
    std::fs::write(&other, std::fs::read_to_string(&other).unwrap().replace("batch_size = 4", "batch_size = 5"))
        .unwrap();
    assert!(run_err(&["train", "--config", &other, "--resume"]).contains("batch_size 4"));
    // Resuming from there works and publishes a fresh checkpoint, clearing the leftovers.
    run_ok(&["train", "--config", write_config(dir.path(), 8, "").to_str().unwrap(), "--resume"]);
    assert_eq!(checkpoint::read_state::<gptlab::train::TrainState>(&ckpt).unwrap().step, 8);
    assert!(!dir.path().join("run/checkpoint.old").exists());
    assert!(!tmp.exists());
}

#[test]
fn a_non_finite_loss_stops_the_run_without_saving() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), 8, "").to_str().unwrap().to_string();
    // An infinite learning rate wrecks the weights in update 1, so update 2's loss is NaN.
    let text = std::fs::read_to_string(&cfg).unwrap().replace("lr = 3e-3", "lr = inf");
    std::fs::write(&cfg, &text).unwrap();
    let err = run_err(&["train", "--config", &cfg]);
    assert!(err.contains("NaN or infinite at step 2"), "{err}");
    assert!(!dir.path().join("run/checkpoint").exists(), "no checkpoint after a bad loss");
    // Saving right after update 1: the loss was still finite, the weights are not.
    std::fs::write(&cfg, text.replace("ckpt_interval = 4", "ckpt_interval = 1")).unwrap();
    let err = run_err(&["train", "--config", &cfg]);
    assert!(err.contains("weights became NaN or infinite by step 1"), "{err}");
    assert!(!dir.path().join("run/checkpoint").exists(), "no checkpoint of bad weights");
}

#[test]
fn bad_configs_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), 8, "").to_str().unwrap().to_string();
    let base = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, base.replace("block_size = 32", "block_size = 32\nn_embd = 50")).unwrap();
    assert!(run_err(&["train", "--config", &cfg]).contains("divisible"));
    std::fs::write(&cfg, base.replace("batch_size = 4", "batch_sise = 4")).unwrap();
    assert!(run_err(&["train", "--config", &cfg]).contains("batch_sise"));
    std::fs::write(&cfg, base.replace("device = \"cpu\"", "device = \"tpu\"")).unwrap();
    assert!(run_err(&["train", "--config", &cfg]).contains("unknown device"));
    assert!(run_err(&["train", "--config", &cfg, "--device", "cuda:3"]).contains("CUDA device"));
    std::fs::write(&cfg, &base).unwrap();
    assert!(run_err(&["train", "--config", &cfg, "--resume"]).contains("does not exist"));
    assert!(run_err(&["train", "--config", "/nonexistent.toml"]).contains("/nonexistent.toml"));
}

#[test]
fn kill_9_during_training_leaves_a_loadable_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    // A checkpoint every step, so the kills land in the middle of saves as well as of steps.
    let cfg = write_config(dir.path(), 5000, "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("ckpt_interval = 4", "ckpt_interval = 1");
    std::fs::write(&cfg, text).unwrap();
    let ckpt = dir.path().join("run/checkpoint");
    for (i, delay_ms) in [1500u64, 2100, 2700].into_iter().enumerate() {
        let mut args = vec!["train", "--config", cfg.to_str().unwrap()];
        if i > 0 {
            args.push("--resume");
        }
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gptlab"))
            .args(&args)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let loaded = checkpoint::load::<gptlab::models::gpt::Gpt>(&ckpt, tch::Device::Cpu)
            .expect("a checkpoint survives kill -9");
        let state = checkpoint::read_state::<gptlab::train::TrainState>(&loaded.dir).unwrap();
        assert!(state.step > 0, "round {i}: training made progress before the kill");
    }
}

#[test]
fn bf16_on_cpu_trains_saves_its_dtype_and_resumes_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let fp32 = tempfile::tempdir().unwrap();
    run_ok(&["train", "--config", write_config(fp32.path(), 4, "").to_str().unwrap()]);
    let out = run_ok(&["train", "--config", write_config(dir.path(), 4, "").to_str().unwrap(), "--dtype", "bf16"]);
    assert!(out.contains("bf16"), "{out}");
    let state = |d: &Path| checkpoint::read_state::<gptlab::train::TrainState>(&d.join("run/checkpoint")).unwrap();
    assert_eq!(state(dir.path()).dtype.as_deref(), Some("bf16"));
    assert_eq!(state(fp32.path()).dtype.as_deref(), Some("fp32"));
    let val = |d: &Path| {
        gptlab::jsonl::read_jsonl(&d.join("run/metrics.jsonl")).unwrap().last().unwrap()["val_loss"].as_f64().unwrap()
    };
    let (b, f) = (val(dir.path()), val(fp32.path()));
    assert!((b - f).abs() < 0.02 * f, "bf16 val loss {b} vs fp32 {f}");
    // The config says auto (fp32 on CPU); the resume keeps the checkpoint's bf16 and says so.
    let out =
        crate::common::gptlab(&["train", "--config", write_config(dir.path(), 8, "").to_str().unwrap(), "--resume"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming in bf16"));
    assert_eq!(state(dir.path()).dtype.as_deref(), Some("bf16"));
}

/// An objective outside the crate: next-token loss of a nano GPT on random tokens, validated with
/// its loss and its next-token accuracy.
struct RandomTokens {
    model: gptlab::models::gpt::Gpt,
    val: Tensor,
}

impl Evaluate for RandomTokens {
    fn validate(&mut self) -> anyhow::Result<ValMetrics> {
        let (x, y) = (self.val.narrow(1, 0, 16), self.val.narrow(1, 1, 16));
        let logits = tch::no_grad(|| self.model.forward(Input::Tokens(&x), Pass::default()))?;
        let accuracy = logits.argmax(-1, false).eq_tensor(&y).to_kind(Kind::Float).mean(Kind::Float);
        Ok(ValMetrics::from([
            ("val_loss".to_string(), lm_loss(&logits, &y).double_value(&[])),
            ("val_accuracy".to_string(), accuracy.double_value(&[])),
        ]))
    }
}

impl Objective for RandomTokens {
    type Batch = Tensor;
    fn loss(&mut self, batch: Tensor) -> anyhow::Result<Tensor> {
        self.model.loss(&batch.narrow(1, 0, 16), &batch.narrow(1, 1, 16), true)
    }
    fn flops(&self, batch: &Tensor) -> f64 {
        batch.size()[0] as f64 * 16.0 * self.model.cfg.flops_per_token(16)
    }
}

fn random_tokens_trainer(dir: &Path, max_steps: u64) -> (Trainer, RandomTokens) {
    let section = TrainSection {
        batch_size: 2,
        max_steps,
        warmup_steps: 1,
        eval_interval: 2,
        log_interval: 1,
        ckpt_interval: 100,
        device: "cpu".into(),
        peak_tflops: Some(1.0),
        ..TrainSection::default()
    };
    let setup = Setup::begin(&section, dir, false, &section).unwrap();
    let cfg = GptConfig { block_size: 16, ..GptConfig::preset("nano").unwrap() };
    let model = gptlab::models::gpt::Gpt::new(&cfg, setup.vs.root()).unwrap();
    let parts = RunParts {
        model_config: &cfg,
        tokenizer: None,
        optim: AdamWConfig::default(),
        unit: "tokens",
        units_per_step: 2 * 16,
        baseline: None,
    };
    let trainer = Trainer::new(setup, parts).unwrap();
    let val = Tensor::randint(512, [4, 17], (Kind::Int64, tch::Device::Cpu));
    (trainer, RandomTokens { model, val })
}

#[test]
fn the_trainer_drives_an_outside_objective_and_logs_and_plots_its_named_metrics() {
    let dir = tempfile::tempdir().unwrap();
    // The supervised loop over a batch stream.
    let (trainer, mut objective) = random_tokens_trainer(&dir.path().join("supervised"), 4);
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..4 {
        tx.send(Tensor::randint(512, [2, 17], (Kind::Int64, tch::Device::Cpu))).unwrap();
    }
    let summary = run(trainer, &mut objective, rx).unwrap();
    assert_eq!(summary.steps, 4);
    let run_dir = dir.path().join("supervised");
    let metrics = gptlab::jsonl::read_jsonl(&run_dir.join("metrics.jsonl")).unwrap();
    let accuracies: Vec<bool> = metrics.iter().map(|r| r["val_accuracy"].is_number()).collect();
    assert_eq!(accuracies, [false, true, false, true], "the named metric lands on eval steps");
    assert!(run_dir.join("val_accuracy.png").exists() && run_dir.join("val_accuracy.svg").exists());
    assert_eq!(checkpoint::read_state::<gptlab::train::TrainState>(&run_dir.join("checkpoint")).unwrap().step, 4);
    // A loop of its own (as PPO's, between rollouts): step from a loss, then end_step.
    let (mut trainer, mut objective) = random_tokens_trainer(&dir.path().join("custom"), 3);
    while !trainer.is_done() {
        let batch = Tensor::randint(512, [2, 17], (Kind::Int64, tch::Device::Cpu));
        trainer.step(|_| Ok(MicroLoss::even(objective.loss(batch.shallow_clone())?, objective.flops(&batch)))).unwrap();
        trainer.end_step(&mut objective).unwrap();
    }
    assert_eq!(trainer.finish().unwrap().steps, 3);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("custom/checkpoint/config.json")).unwrap())
            .unwrap();
    assert_eq!(saved["family"], "gpt");
}
