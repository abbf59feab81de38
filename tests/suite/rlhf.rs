//! InstructGPT's stages: the labeler's data, SFT's loss mask, exact resume, and bad data files.

use std::path::{Path, PathBuf};

use gptlab::checkpoint;
use gptlab::models::gpt::{Gpt, GptConfig};
use gptlab::rlhf::labeler::LabelPrompt;
use gptlab::tokenizer::Tokenizer;
use serde_json::{json, Value};
use tch::nn::VarStore;
use tch::Device;

use crate::common::{assert_same, persistent_tempdir, run_err, run_ok, shard_dir};

/// A nano GPT with random weights, dropout on, and the test corpus's tokenizer (chat markers
/// included).
fn gpt_ckpt(dir: &Path, block_size: i64) -> PathBuf {
    let ckpt = dir.join(format!("gpt{block_size}"));
    tch::manual_seed(9);
    let vs = VarStore::new(Device::Cpu);
    let cfg = GptConfig { vocab_size: 448, block_size, dropout: 0.1, ..GptConfig::preset("nano").unwrap() };
    Gpt::new(&cfg, vs.root()).unwrap();
    checkpoint::save_model(&ckpt, &vs, &cfg, Some(&shard_dir().parent().unwrap().join("tokenizer.json"))).unwrap();
    ckpt
}

/// What differs between the stages' configs: the labeler's files a stage reads, the lines after
/// them, and the batch size.
struct StageFiles<'a> {
    stage: &'a str,
    train: &'a str,
    val: &'a str,
    extra: String,
    batch_size: usize,
}

/// A stage's config in `dir` (`{stage}_{steps}.toml`) training `init` on `f`'s files in `data`.
fn stage_config(dir: &Path, init: &Path, data: &Path, f: StageFiles, steps: u64) -> PathBuf {
    let text = format!(
        "out_dir = \"{}\"\ninit = \"{}\"\n[data]\ntrain = \"{}\"\nval = \"{}\"\n{}\n{}",
        dir.join("run").display(),
        init.display(),
        data.join(f.train).display(),
        data.join(f.val).display(),
        f.extra,
        train_tail(f.batch_size, steps)
    );
    write_config(dir, &format!("{}_{steps}.toml", f.stage), text)
}

fn sft_config(dir: &Path, init: &Path, data: &Path, max_steps: u64) -> PathBuf {
    let extra = "[sft]\nskip_too_long = true".to_string();
    let files = StageFiles { stage: "sft", train: "sft.jsonl", val: "sft_val.jsonl", extra, batch_size: 4 };
    stage_config(dir, init, data, files, max_steps)
}

/// Runs `stage` straight to `full` steps, and to `half` then resumed to `full`, from configs
/// `config(dir, steps)`; asserts both end with the same weights and optimizer state, and returns
/// what the resumed run printed.
fn assert_resumes_exactly(
    root: &Path,
    stage: &str,
    half: u64,
    full: u64,
    config: impl Fn(&Path, u64) -> PathBuf,
) -> String {
    let (straight, split) = (root.join(format!("{stage}-straight")), root.join(format!("{stage}-split")));
    let arg = |p: PathBuf| p.to_str().unwrap().to_string();
    run_ok(&["rlhf", stage, "--config", &arg(config(&straight, full))]);
    run_ok(&["rlhf", stage, "--config", &arg(config(&split, half))]);
    let out = run_ok(&["rlhf", stage, "--config", &arg(config(&split, full)), "--resume"]);
    for f in ["model.safetensors", "optimizer.safetensors"] {
        assert_same(&straight.join("run/checkpoint").join(f), &split.join("run/checkpoint").join(f));
    }
    out
}

/// A scratch root holding the labeler's data for `prompts` prompts in `root/data`.
fn rlhf_data(prompts: usize) -> (PathBuf, PathBuf) {
    let root = persistent_tempdir();
    let data = root.join("data");
    run_ok(&["rlhf", "data", "--out", data.to_str().unwrap(), "--prompts", &prompts.to_string()]);
    (root, data)
}

/// A DPO config in `dir` on the labeler's preference pairs, in batches of `batch_size` pairs.
fn dpo_config(dir: &Path, init: &Path, data: &Path, batch_size: usize, steps: u64) -> String {
    let files = StageFiles {
        stage: "dpo",
        train: "rankings.jsonl",
        val: "preferences_val.jsonl",
        extra: String::new(),
        batch_size,
    };
    stage_config(dir, init, data, files, steps).to_str().unwrap().to_string()
}

/// Writes a stage's config into `dir` (created) and returns its path.
fn write_config(dir: &Path, name: &str, text: String) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `[train]` for tiny CPU runs that validate and checkpoint every 3 steps.
fn train_tail(batch_size: usize, max_steps: u64) -> String {
    format!("[train]\nbatch_size = {batch_size}\nmax_steps = {max_steps}\ndecay_steps = 6\neval_interval = 3\nckpt_interval = 3\nlog_interval = 1\ndevice = \"cpu\"\nthreads = 1\npeak_tflops = 1.0\n")
}

#[test]
fn the_labeler_writes_ranked_data_that_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(&["rlhf", "data", "--out", dir.path().to_str().unwrap(), "--prompts", "40"]);
    let rankings =
        gptlab::rlhf::data::read(&dir.path().join("rankings.jsonl"), gptlab::rlhf::data::parse_ranked).unwrap();
    assert_eq!(rankings.len(), 40);
    assert!(rankings.iter().all(|r| (4..=9).contains(&r.responses.len())));
    let sft = gptlab::jsonl::read_jsonl(&dir.path().join("sft.jsonl")).unwrap();
    // Where the demonstration is among the responses, the labeler ranks it first.
    let mut with_demo = 0;
    for (r, s) in rankings.iter().zip(&sft) {
        let demo = s["completion"].as_str().unwrap();
        if r.responses.iter().any(|x| x == demo) {
            assert_eq!(r.responses[r.ranking[0]], demo);
            with_demo += 1;
        }
    }
    assert!(with_demo > 10, "{with_demo}");
    assert_eq!(gptlab::jsonl::read_jsonl(&dir.path().join("prompts_val.jsonl")).unwrap().len(), 4);
}

#[test]
fn sft_trains_on_the_assistant_tokens_and_resumes_exactly() {
    let (root, data) = rlhf_data(24);
    let init = gpt_ckpt(&root, 64);
    let out = assert_resumes_exactly(&root, "sft", 3, 6, |dir, steps| sft_config(dir, &init, &data, steps));
    assert!(out.contains("trained SFT 6 steps"), "{out}");
    // The loss mask: what trains is the assistant's answer and its closing end-of-text.
    let tok = Tokenizer::from_file(&init.join("tokenizer.json")).unwrap();
    let record = gptlab::rlhf::data::parse_sft(&json!({"prompt": "Spell it.", "completion": "ti"})).unwrap();
    let ex = record.encode(&tok, gptlab::data::multimodal::LossOn::Assistant).unwrap();
    let trained: Vec<u32> = ex.ids.iter().zip(&ex.trained).filter(|(_, t)| **t).map(|(&i, _)| i as u32).collect();
    assert_eq!(tok.decode(&trained).unwrap(), "ti<|endoftext|>");
    assert_ne!(tok.pad(), tok.eot(), "padding is not the end-of-text");
}

#[test]
fn sft_rm_and_dpo_on_two_ranks_train_like_one_process() {
    // SFT's loss averages the trained tokens of the whole batch, however the ranks' rows split
    // them; the reward model's averages prompts (and its offset is fitted over the ranks'
    // shares of the demonstrations); DPO's averages pairs. Dropout is off: a rank's rows draw
    // other masks.
    let (root, data) = rlhf_data(24);
    let init = gpt_ckpt(&root, 256);
    let config = std::fs::read_to_string(init.join("config.json")).unwrap();
    std::fs::write(init.join("config.json"), config.replace("\"dropout\": 0.1", "\"dropout\": 0.0")).unwrap();
    let sft = |dir: &Path| {
        let path = sft_config(dir, &init, &data, 4);
        let text = std::fs::read_to_string(&path).unwrap().replace("[sft]\n", "[sft]\ndropout = 0.0\n");
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let dpo = |dir: &Path| dpo_config(dir, &init, &data, 4, 4);
    let rm = |dir: &Path| rm_config(dir, &init, &data, 4).to_str().unwrap().to_string();
    for (stage, config) in [("sft", &sft as &dyn Fn(&Path) -> String), ("rm", &rm), ("dpo", &dpo)] {
        let (one, two) = (root.join(format!("{stage}-one")), root.join(format!("{stage}-two")));
        run_ok(&["rlhf", stage, "--config", &config(&one)]);
        run_ok(&["launch", "--nproc", "2", "--", "rlhf", stage, "--config", &config(&two)]);
        crate::dist::assert_runs_match(&one.join("run"), &two.join("run"), 1e-5);
    }
}

#[test]
fn bad_rlhf_data_is_a_one_line_error_naming_the_line() {
    let root = persistent_tempdir();
    let init = gpt_ckpt(&root, 64);
    let data = root.join("bad");
    std::fs::create_dir_all(&data).unwrap();
    let write = |name: &str, recs: &[Value]| gptlab::jsonl::write_jsonl(&data.join(name), recs).unwrap();
    write("sft_val.jsonl", &[json!({"prompt": "a", "completion": "b"})]);
    write("sft.jsonl", &[json!({"prompt": "a", "completion": "b"}), json!({"prompt": "a"})]);
    let cfg = sft_config(&root.join("run-bad"), &init, &data, 2);
    let err = run_err(&["rlhf", "sft", "--config", cfg.to_str().unwrap()]);
    assert!(err.contains("sft.jsonl line 2") && err.contains("lacks \"completion\""), "{err}");
    write(
        "sft.jsonl",
        &[json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b ".repeat(80)}]})],
    );
    let cfg = sft_config(&root.join("run-long"), &init, &data, 2).to_str().unwrap().to_string();
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg).unwrap().replace("skip_too_long = true", "skip_too_long = false"),
    )
    .unwrap();
    let err = run_err(&["rlhf", "sft", "--config", &cfg]);
    assert!(err.contains("sft.jsonl line 1") && err.contains("longer than the model's context of 64"), "{err}");
    let rankings = data.join("r.jsonl");
    gptlab::jsonl::write_jsonl(
        &rankings,
        &[json!({"prompt": "p", "responses": ["a", "b", "c"], "ranking": [0, 1, 1]})],
    )
    .unwrap();
    let err = format!("{:#}", gptlab::rlhf::data::read(&rankings, gptlab::rlhf::data::parse_ranked).unwrap_err());
    assert!(err.contains("r.jsonl line 1") && err.contains("not a permutation"), "{err}");
}

#[test]
fn the_kwise_loss_matches_a_hand_computation() {
    use gptlab::models::reward::kwise_loss;
    use tch::Tensor;
    // Prompt 1: K = 3, rewards 1, 0, 2 for responses ranked [2, 0, 1]; prompt 2: K = 2.
    let r = Tensor::from_slice(&[1.0f32, 0.0, 2.0, 0.5, -0.5]);
    let ranked =
        gptlab::rlhf::data::Ranked { prompt: "p".into(), responses: vec!["a".into(); 3], ranking: vec![2, 0, 1] };
    let p1: Vec<(i64, i64)> = ranked.pairs().into_iter().map(|(w, l)| (w as i64, l as i64)).collect();
    assert_eq!(p1, vec![(2, 0), (2, 1), (0, 1)]);
    let loss = kwise_loss(&r, &[p1, vec![(4, 3)]]).double_value(&[]);
    let ls = |x: f64| -(1.0 + (-x).exp()).ln();
    let first = -(ls(1.0) + ls(2.0) + ls(1.0)) / 3.0;
    let second = -ls(-1.0);
    assert!((loss - (first + second) / 2.0).abs() < 1e-6, "{loss} vs {}", (first + second) / 2.0);
}

fn rm_config(dir: &Path, init: &Path, data: &Path, max_steps: u64) -> PathBuf {
    let extra = format!("demonstrations = \"{}\"", data.join("sft_val.jsonl").display());
    let files = StageFiles { stage: "rm", train: "rankings.jsonl", val: "rankings_val.jsonl", extra, batch_size: 2 };
    stage_config(dir, init, data, files, max_steps)
}

#[test]
fn the_reward_model_resumes_exactly_and_centres_demonstrations_on_zero() {
    use gptlab::models::reward::RewardModel;
    let (root, data) = rlhf_data(16);
    let init = gpt_ckpt(&root, 256);
    let out = assert_resumes_exactly(&root, "rm", 3, 6, |dir, steps| rm_config(dir, &init, &data, steps));
    assert!(out.contains("reward offset"), "{out}");
    let split = root.join("rm-split");
    let metrics = gptlab::jsonl::read_jsonl(&split.join("run/metrics.jsonl")).unwrap();
    assert!(metrics.iter().any(|m| m["val_pair_acc"].is_f64()));
    // The demonstrations' mean reward is 0 once the offset is subtracted.
    let loaded = checkpoint::load::<RewardModel>(&split.join("run/checkpoint"), Device::Cpu).unwrap();
    let tok = loaded.tokenizer().unwrap();
    let demos = gptlab::jsonl::read_jsonl(&data.join("sft_val.jsonl")).unwrap();
    let mut total = 0.0;
    for d in &demos {
        let ids = gptlab::rlhf::reward::encode_response(
            &tok,
            d["prompt"].as_str().unwrap(),
            d["completion"].as_str().unwrap(),
        )
        .unwrap();
        let n = ids.len() as i64;
        let r = tch::no_grad(|| {
            loaded.model.rewards(&tch::Tensor::from_slice(&ids).view([1, n]), &tch::Tensor::from_slice(&[n - 1]), false)
        })
        .unwrap();
        total += r.double_value(&[0]);
    }
    assert!((total / demos.len() as f64).abs() < 1e-4, "mean demonstration reward {}", total / demos.len() as f64);
    assert!(loaded.model.offset.double_value(&[0]).abs() > 0.0, "an offset was fitted");
    // The LM is intact: the reward checkpoint samples as a GPT.
    run_ok(&[
        "sample",
        "--ckpt",
        split.join("run/checkpoint").to_str().unwrap(),
        "--prompt",
        "a",
        "--max-new-tokens",
        "3",
        "--device",
        "cpu",
    ]);
}

#[test]
fn dpo_loss_and_sequence_log_probabilities_match_hand_computations() {
    use gptlab::rlhf::dpo::{dpo_loss, sequence_logps};
    use tch::{Kind, Tensor};
    let t = |v: &[f32]| Tensor::from_slice(v);
    let (loss, margin) = dpo_loss(&t(&[-1.0, -2.0]), &t(&[-3.0, -1.0]), &t(&[-1.5, -2.0]), &t(&[-2.0, -2.0]), 0.1);
    let ls = |x: f64| -(1.0 + (-x).exp()).ln();
    let want = -(ls(0.15) + ls(-0.1)) / 2.0;
    assert!((loss.double_value(&[]) - want).abs() < 1e-6, "{} vs {want}", loss.double_value(&[]));
    assert!((margin.double_value(&[0]) - 0.15).abs() < 1e-6 && (margin.double_value(&[1]) + 0.1).abs() < 1e-6);
    // Sequence log-probabilities: the trained positions' log-softmax, summed; padding is inert.
    tch::manual_seed(4);
    let vs = VarStore::new(Device::Cpu);
    let model =
        Gpt::new(&GptConfig { vocab_size: 32, block_size: 16, ..GptConfig::preset("nano").unwrap() }, vs.root())
            .unwrap();
    let ids = Tensor::from_slice(&[3i64, 4, 5, 6, 1, 1]).view([1, 6]);
    let targets = Tensor::from_slice(&[-100i64, 5, 6, -100, -100]).view([1, 5]);
    let got = sequence_logps(&model, &ids, &targets, false).unwrap().double_value(&[0]);
    let alone = Tensor::from_slice(&[3i64, 4, 5, 6]).view([1, 4]);
    let logits = model.forward(gptlab::models::gpt::Input::Tokens(&alone), Default::default()).unwrap();
    let lp = logits.log_softmax(-1, Kind::Double);
    let want = lp.double_value(&[0, 1, 5]) + lp.double_value(&[0, 2, 6]);
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
}

#[test]
fn dpo_resumes_exactly() {
    let (root, data) = rlhf_data(16);
    let init = gpt_ckpt(&root, 256);
    assert_resumes_exactly(&root, "dpo", 3, 6, |dir, steps| PathBuf::from(dpo_config(dir, &init, &data, 2, steps)));
    let split = root.join("dpo-split");
    let metrics = gptlab::jsonl::read_jsonl(&split.join("run/metrics.jsonl")).unwrap();
    assert!(metrics.iter().any(|m| m["val_reward_acc"].is_f64() && m["val_margin"].is_f64()));
}

#[test]
fn ppo_resumes_exactly_starts_at_the_reference_and_the_pretraining_mix_reaches_the_policy() {
    let (root, data) = rlhf_data(16);
    let sft = gpt_ckpt(&root, 256);
    run_ok(&["rlhf", "rm", "--config", rm_config(&root.join("rm"), &sft, &data, 2).to_str().unwrap()]);
    let rm = root.join("rm/run/checkpoint");
    let sft_before = std::fs::read(sft.join("model.safetensors")).unwrap();
    let cfg = |dir: &Path, iterations: u64, ptx: f64| {
        let text = format!(
            "out_dir = \"{}\"\npolicy = \"{}\"\nreward = \"{}\"\n[data]\nprompts = \"{}\"\nval_prompts = \"{}\"\npretrain = \"{}\"\n[ppo]\niterations = {iterations}\nrollouts = 4\nminibatches = 2\nppo_epochs = 2\nmax_new_tokens = 6\nptx_coef = {ptx}\nval_prompts = 2\n[train]\nmax_steps = {}\ndevice = \"cpu\"\nthreads = 1\npeak_tflops = 1.0\n",
            dir.join("run").display(),
            sft.display(),
            rm.display(),
            data.join("prompts.jsonl").display(),
            data.join("prompts_val.jsonl").display(),
            shard_dir().display(),
            iterations * 4,
        );
        write_config(dir, &format!("ppo_{iterations}_{ptx}.toml"), text).to_str().unwrap().to_string()
    };
    // Two ranks sample two rollouts each and update on them, one line of metrics per iteration.
    let two = root.join("ppo-two");
    let out = run_ok(&["launch", "--nproc", "2", "--", "rlhf", "ppo", "--config", &cfg(&two, 1, 0.5)]);
    assert_eq!(out.matches("trained PPO 4 steps").count(), 1, "{out}");
    let m = gptlab::jsonl::read_jsonl(&two.join("run/metrics.jsonl")).unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["kl"].as_f64(), Some(0.0), "both ranks' first rollouts come from the reference: {}", m[0]);
    assert!(m[0]["val_reward"].is_f64() && m[0]["ptx_loss"].as_f64().unwrap() > 0.0, "{}", m[0]);
    let out = assert_resumes_exactly(&root, "ppo", 1, 2, |dir, iterations| PathBuf::from(cfg(dir, iterations, 0.5)));
    assert!(out.contains("trained PPO 8 steps"), "{out}");
    let straight = root.join("ppo-straight");
    let metrics = gptlab::jsonl::read_jsonl(&straight.join("run/metrics.jsonl")).unwrap();
    assert_eq!(metrics.len(), 2, "one line per iteration");
    for m in &metrics {
        // The old log-probabilities come from a full forward pass of the same weights.
        assert!(m["first_ratio_dev"].as_f64().unwrap() < 1e-6, "{m}");
        for key in ["reward", "kl", "kl_coef", "eot_rate", "response_len", "clip_frac", "ptx_loss", "val_reward"] {
            assert!(m[key].is_number(), "{key} missing from {m}");
        }
    }
    // The policy starts as the reference, so the first rollouts have KL 0; the reference's file
    // is never written.
    assert_eq!(metrics[0]["kl"].as_f64().unwrap(), 0.0);
    assert_eq!(std::fs::read(sft.join("model.safetensors")).unwrap(), sft_before);
    // With the same rollouts, the pretraining mix changes the policy's update.
    let (with, without) = (root.join("ppo-ptx"), root.join("ppo-no-ptx"));
    run_ok(&["rlhf", "ppo", "--config", &cfg(&with, 1, 0.5)]);
    run_ok(&["rlhf", "ppo", "--config", &cfg(&without, 1, 0.0)]);
    let policy = |dir: &Path| {
        crate::common::tensors(&dir.join("run/checkpoint/model.safetensors"))
            .into_iter()
            .find(|(n, _)| n == "transformer.h.0.attn.c_attn.weight")
            .unwrap()
            .1
    };
    let diff = (policy(&with) - policy(&without)).abs().max().double_value(&[]);
    assert!(diff > 1e-7, "the ptx term left the policy unchanged ({diff})");
    // The PPO checkpoint samples as a GPT.
    run_ok(&[
        "sample",
        "--ckpt",
        straight.join("run/checkpoint").to_str().unwrap(),
        "--prompt",
        "a",
        "--max-new-tokens",
        "3",
        "--device",
        "cpu",
    ]);
}

#[test]
fn the_labeler_compares_models_answers_and_win_rates_are_complementary() {
    let (root, data) = rlhf_data(40);
    let a = gpt_ckpt(&root, 256);
    let b = gpt_ckpt(&root.join("other"), 128);
    let out = root.join("compare");
    let prompts = data.join("prompts_val.jsonl");
    let printed = run_ok(&[
        "rlhf",
        "compare",
        "--ckpt",
        a.to_str().unwrap(),
        "--ckpt",
        b.to_str().unwrap(),
        "--prompts",
        prompts.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--max-new-tokens",
        "4",
        "--device",
        "cpu",
    ]);
    assert!(printed.contains("preferred to"), "{printed}");
    let c: Value = serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    let w = |i: usize, j: usize| c["win_rate"][i][j].as_f64().unwrap();
    assert_eq!(w(0, 0), 0.5);
    assert!((w(0, 1) + w(1, 0) - 1.0).abs() < 1e-12);
    assert_eq!(c["prompts"], 4);
    assert_eq!(gptlab::jsonl::read_jsonl(&out.join("answers_gpt256.jsonl")).unwrap().len(), 4);
    // Prompts without the labeler's fields cannot be judged.
    let bare = root.join("bare.jsonl");
    gptlab::jsonl::write_jsonl(&bare, &[json!({"prompt": "hi"})]).unwrap();
    let err = run_err(&[
        "rlhf",
        "compare",
        "--ckpt",
        a.to_str().unwrap(),
        "--ckpt",
        b.to_str().unwrap(),
        "--prompts",
        bare.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("bare.jsonl line 1") && err.contains("answer"), "{err}");
}

#[test]
fn the_labeler_ranks_a_models_own_samples_one_response_per_quality() {
    let (root, data) = rlhf_data(40);
    let model = gpt_ckpt(&root, 128);
    let out = root.join("ranked/samples.jsonl");
    let prompts_file = data.join("prompts.jsonl");
    let (model_arg, prompts_arg, out_arg) =
        (model.to_str().unwrap(), prompts_file.to_str().unwrap(), out.to_str().unwrap());
    let args = |extra: &[&'static str]| {
        let mut a = vec!["rlhf", "label", "--ckpt", model_arg, "--prompts", prompts_arg, "--out", out_arg];
        a.extend_from_slice(&["--max-new-tokens", "12", "--device", "cpu"]);
        a.extend_from_slice(extra);
        a
    };
    let printed = run_ok(&args(&[]));
    assert!(printed.contains("ranked") && printed.contains("skipped"), "{printed}");
    let ranked = gptlab::rlhf::data::read(&out, gptlab::rlhf::data::parse_ranked).unwrap();
    assert!(!ranked.is_empty() && ranked.len() <= 40);
    let prompts: Vec<LabelPrompt> = gptlab::rlhf::data::read(&prompts_file, LabelPrompt::from_record).unwrap();
    let raw = gptlab::jsonl::read_jsonl(&out).unwrap();
    for r in &raw {
        let p = prompts.iter().find(|p| p.prompt == r["prompt"]).expect("a prompt of the file");
        let responses: Vec<String> = serde_json::from_value(r["responses"].clone()).unwrap();
        let ranking: Vec<usize> = serde_json::from_value(r["ranking"].clone()).unwrap();
        assert!((2..=9).contains(&responses.len()), "{r}");
        // Best first, and no two responses the labeler rates alike.
        for w in ranking.windows(2) {
            let (a, b) = (p.judge(&responses[w[0]]), p.judge(&responses[w[1]]));
            assert_eq!(a.cmp_quality(&b), std::cmp::Ordering::Greater, "{r}");
        }
    }
    let err = run_err(&args(&["--k-min", "1"]));
    assert!(err.contains("--k-min"), "{err}");
}

#[test]
fn the_report_puts_win_rates_against_the_baseline_and_plots_ppo_runs() {
    let root = tempfile::tempdir().unwrap();
    let cmp = root.path().join("compare");
    std::fs::create_dir_all(&cmp).unwrap();
    let model = |name: &str, safe: f64| json!({"model": name, "safe": safe, "correct": 0.5, "format": 0.5, "within_budget": 1.0, "mean_chars": 4.0});
    let compare = json!({"prompts": 10, "models": [model("sft", 0.8), model("ppo", 1.0)], "win_rate": [[0.5, 0.35], [0.65, 0.5]]});
    std::fs::write(cmp.join("compare.json"), compare.to_string()).unwrap();
    let ppo = root.path().join("ppo");
    std::fs::create_dir_all(&ppo).unwrap();
    let iters: Vec<Value> = (1..=3)
        .map(|i| json!({"step": 16 * i, "reward": 0.1 * i as f64, "kl": 0.5 * i as f64, "val_loss": 2.0, "val_reward": 0.0}))
        .collect();
    gptlab::jsonl::write_jsonl(&ppo.join("metrics.jsonl"), &iters).unwrap();
    let out = root.path().join("report");
    let (c, p, o) = (cmp.to_str().unwrap(), ppo.to_str().unwrap(), out.to_str().unwrap());
    let printed = run_ok(&["rlhf", "report", "--compare", c, "--ppo", p, "--out", o]);
    assert!(printed.contains("ppo preferred to sft: 0.650"), "{printed}");
    let md = std::fs::read_to_string(out.join("rlhf.md")).unwrap();
    assert!(md.contains("| ppo | 1.000 | 0.500 | 0.500 | 1.000 | 4.0 | 0.650 |"), "{md}");
    assert!(md.contains("0.100 → 0.300"), "{md}");
    for stem in ["win_rates", "reward_vs_kl", "lm_loss"] {
        assert!(out.join(format!("{stem}.png")).is_file() && out.join(format!("{stem}.svg")).is_file(), "{stem}");
    }
    let printed = run_ok(&["rlhf", "report", "--compare", c, "--baseline", "ppo", "--out", o]);
    assert!(printed.contains("sft preferred to ppo: 0.350"), "{printed}");
    let err = run_err(&["rlhf", "report", "--compare", c, "--baseline", "dpo", "--out", o]);
    assert!(err.contains("baseline dpo is not among the compared models (sft, ppo)"), "{err}");
    let err = run_err(&["rlhf", "report", "--compare", o, "--out", o]);
    assert!(err.contains("compare.json"), "{err}");
}
