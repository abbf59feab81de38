//! GPT-1 fine-tuning: the input layouts per task type, the head on the extract state, the
//! auxiliary LM loss, the multiple-choice softmax, added tokens, exact resume, and bad input as
//! one-line errors.

use std::path::{Path, PathBuf};

use gptlab::checkpoint;
use gptlab::finetune::data::{Layout, Specials, TooLong};
use gptlab::models::finetuned::{FinetunedConfig, FinetunedGpt, HeadSpec, TaskType};
use gptlab::models::gpt::{Gpt, GptConfig, Input, Pass};
use gptlab::tokenizer::Tokenizer;
use serde_json::{json, Value};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::common::{assert_same, persistent_tempdir, run_err, run_ok, shard_dir};

fn tokenizer_path() -> PathBuf {
    shard_dir().parent().unwrap().join("tokenizer.json")
}

/// A pretrained-looking nano GPT (random weights, dropout on) with `rows` embedding rows.
fn gpt_ckpt(dir: &Path, rows: i64) -> PathBuf {
    gpt_ckpt_with_dropout(dir, rows, 0.1)
}

fn gpt_ckpt_with_dropout(dir: &Path, rows: i64, dropout: f64) -> PathBuf {
    let ckpt = dir.join("gpt");
    tch::manual_seed(5);
    let vs = VarStore::new(Device::Cpu);
    let cfg = GptConfig { vocab_size: rows, block_size: 128, dropout, ..GptConfig::preset("nano").unwrap() };
    Gpt::new(&cfg, vs.root()).unwrap();
    checkpoint::save_model(&ckpt, &vs, &cfg, Some(&tokenizer_path())).unwrap();
    ckpt
}

const SP: Specials = Specials { start: 1000, delim: 1001, extract: 1002, pad: 1 };

fn layout(block: usize, too_long: TooLong) -> Layout {
    Layout { specials: SP, block, too_long }
}

fn spec(task_type: TaskType, choices: usize, task_token: Option<i64>) -> HeadSpec {
    let classes = if task_type == TaskType::MultipleChoice { vec![] } else { vec!["no".into(), "yes".into()] };
    HeadSpec { name: "t".into(), task_type, classes, choices, task_token }
}

fn ids(tok: &Tokenizer, text: &str) -> Vec<i64> {
    tok.encode(text).unwrap().into_iter().map(i64::from).collect()
}

#[test]
fn each_task_type_is_laid_out_as_gpt1_lays_it_out() {
    let tok = Tokenizer::from_file(&tokenizer_path()).unwrap();
    let (a, b) = (ids(&tok, "There is a red circle."), ids(&tok, "The circle is red."));
    let cat = |parts: &[&[i64]]| parts.concat();
    let (s, d, e) = (&[SP.start][..], &[SP.delim][..], &[SP.extract][..]);
    let l = layout(128, TooLong::Error);
    let rows = |t, rec: Value, choices, token| {
        l.encode(0, &spec(t, choices, token), &[rec], &tok, "test").unwrap().examples.remove(0)
    };
    let ex = rows(TaskType::Classification, json!({"text": "There is a red circle.", "label": "yes"}), 0, None);
    assert_eq!((ex.rows, ex.label), (vec![cat(&[s, &a, e])], 1));
    let ex = rows(
        TaskType::Entailment,
        json!({"premise": "There is a red circle.", "hypothesis": "The circle is red.", "label": 0}),
        0,
        Some(1003),
    );
    assert_eq!(ex.rows, vec![cat(&[s, &[1003], &a, d, &b, e])], "a task token follows start");
    let ex = rows(
        TaskType::Similarity,
        json!({"text_a": "There is a red circle.", "text_b": "The circle is red.", "label": 1}),
        0,
        None,
    );
    assert_eq!(ex.rows, vec![cat(&[s, &a, d, &b, e]), cat(&[s, &b, d, &a, e])], "both orders");
    let ex = rows(
        TaskType::MultipleChoice,
        json!({"context": "There is a red circle.", "choices": ["The circle is red.", "no"], "label": "no"}),
        2,
        None,
    );
    let no = ids(&tok, "no");
    assert_eq!((ex.rows, ex.label), (vec![cat(&[s, &a, d, &b, e]), cat(&[s, &a, d, &no, e])], 1));

    // Too long: an error by default; cut from the longest segment's start when asked.
    let long = json!({"premise": "There is a red circle. ".repeat(8), "hypothesis": "The circle is red.", "label": 1});
    let full = 3 + ids(&tok, &"There is a red circle. ".repeat(8)).len() + b.len();
    let err = layout(20, TooLong::Error).encode(
        0,
        &spec(TaskType::Entailment, 0, None),
        std::slice::from_ref(&long),
        &tok,
        "f.jsonl",
    );
    let msg = format!("{:#}", err.err().unwrap());
    assert!(msg.contains("f.jsonl record 1") && msg.contains(&format!("{full} tokens")), "{msg}");
    let cut =
        layout(20, TooLong::Truncate).encode(0, &spec(TaskType::Entailment, 0, None), &[long], &tok, "f").unwrap();
    assert_eq!(cut.truncated, 1);
    let row = &cut.examples[0].rows[0];
    assert_eq!(row.len(), 20);
    assert_eq!(row[row.len() - 1 - b.len()..], cat(&[&b, e])[..], "the short hypothesis is kept whole");
}

#[test]
fn bad_labels_and_choice_counts_name_the_record() {
    let tok = Tokenizer::from_file(&tokenizer_path()).unwrap();
    let l = layout(128, TooLong::Error);
    let err = |t: TaskType, choices: usize, rec: Value| {
        format!(
            "{:#}",
            l.encode(0, &spec(t, choices, None), &[json!({"text": "a", "label": 0}), rec], &tok, "d.jsonl")
                .err()
                .unwrap()
        )
    };
    assert!(err(TaskType::Classification, 0, json!({"text": "b", "label": 2}))
        .contains("d.jsonl record 2: label 2 is outside the 2 classes"));
    assert!(err(TaskType::Classification, 0, json!({"text": "b", "label": "maybe"}))
        .contains("\"maybe\" is not one of the classes"));
    assert!(err(TaskType::Classification, 0, json!({"label": 1})).contains("lacks field \"text\""));
    assert!(err(TaskType::Classification, 0, json!({"text": "b", "label": 1.5})).contains("must be an integer index"));
    let mc = |choices: Value| {
        format!(
            "{:#}",
            l.encode(
                0,
                &spec(TaskType::MultipleChoice, 3, None),
                &[json!({"context": "c", "choices": choices, "label": 0})],
                &tok,
                "m.jsonl"
            )
            .err()
            .unwrap()
        )
    };
    assert!(mc(json!(["a", "b"])).contains("has 2 choices, but the task's records have 3"));
}

/// A fine-tuned nano model with one head of `task_type` (two classes or three choices).
fn finetuned(task_type: TaskType) -> (VarStore, FinetunedGpt) {
    tch::manual_seed(3);
    let vs = VarStore::new(Device::Cpu);
    let gpt = GptConfig { vocab_size: 64, block_size: 32, ..GptConfig::preset("nano").unwrap() };
    let choices = if task_type == TaskType::MultipleChoice { 3 } else { 0 };
    let cfg = FinetunedConfig {
        gpt,
        start_token: 60,
        delim_token: 61,
        extract_token: 62,
        heads: vec![spec(task_type, choices, None)],
    };
    let model = FinetunedGpt::new(&cfg, vs.root()).unwrap();
    (vs, model)
}

fn data(examples: Vec<(Vec<Vec<i64>>, i64)>) -> gptlab::finetune::data::TaskData {
    gptlab::finetune::data::TaskData {
        head: 0,
        examples: examples.into_iter().map(|(rows, label)| gptlab::finetune::data::Example { rows, label }).collect(),
        truncated: 0,
    }
}

#[test]
fn the_head_reads_the_extract_state_and_padding_changes_nothing() {
    let (vs, model) = finetuned(TaskType::Classification);
    let short = vec![60, 5, 6, 62];
    let long = vec![60, 7, 8, 9, 10, 11, 62];
    let d = data(vec![(vec![short.clone()], 1), (vec![long], 0)]);
    let batch = d.batch(&[0, 1], 1, Device::Cpu);
    assert_eq!(Vec::<i64>::try_from(&batch.extract).unwrap(), vec![3, 6]);
    let out = model.losses(&batch, true, false).unwrap();
    // By hand: the decoder on the short row alone, its last state through the head's weights.
    let h = model.gpt.hidden(Input::Tokens(&Tensor::from_slice(&short).view([1, 4])), Pass::default()).unwrap();
    let vars = vs.variables();
    let manual = h.get(0).get(3).unsqueeze(0).linear(&vars["heads.t.weight"], Some(&vars["heads.t.bias"]));
    let diff = (out.logits.get(0) - manual.get(0)).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "logits differ from the extract state's by {diff}");
    // Changing a token before the extract changes the logits.
    let d2 = data(vec![(vec![vec![60, 5, 7, 62]], 1)]);
    let other = model.losses(&d2.batch(&[0], 1, Device::Cpu), false, false).unwrap();
    assert!((other.logits.get(0) - out.logits.get(0)).abs().max().double_value(&[]) > 1e-6);
}

#[test]
fn the_auxiliary_loss_is_the_lm_loss_on_the_same_sequences_and_lambda_zero_leaves_the_task_loss() {
    let (_vs, model) = finetuned(TaskType::Entailment);
    let rows = [vec![60, 5, 6, 61, 7, 62], vec![60, 9, 61, 10, 11, 12, 13, 62]];
    let d = data(vec![(vec![rows[0].clone()], 1), (vec![rows[1].clone()], 0)]);
    let out = model.losses(&d.batch(&[0, 1], 1, Device::Cpu), true, false).unwrap();
    // By hand: each row alone, the next-token log-loss summed over every real position.
    let (mut nll, mut n) = (0.0, 0);
    for r in &rows {
        let x = Tensor::from_slice(&r[..r.len() - 1]).view([1, -1]);
        let y = Tensor::from_slice(&r[1..]).view([1, -1]);
        nll += model.gpt.loss(&x, &y, false).unwrap().double_value(&[]) * (r.len() - 1) as f64;
        n += r.len() - 1;
    }
    let lm = out.lm.double_value(&[]);
    assert!((lm - nll / n as f64).abs() < 1e-5, "{lm} vs {}", nll / n as f64);
    let task = out.task.double_value(&[]);
    let without = model.losses(&d.batch(&[0, 1], 1, Device::Cpu), false, false).unwrap();
    assert_eq!(without.task.double_value(&[]), task, "lambda = 0 is the task loss alone");
    assert_eq!(without.lm.double_value(&[]), 0.0);
}

#[test]
fn multiple_choice_scores_each_choice_and_normalises_over_the_choices() {
    let (vs, model) = finetuned(TaskType::MultipleChoice);
    let rows = vec![vec![60, 5, 61, 6, 62], vec![60, 5, 61, 7, 8, 62], vec![60, 5, 61, 9, 62]];
    let d = data(vec![(rows.clone(), 2)]);
    let out = model.losses(&d.batch(&[0], 1, Device::Cpu), false, false).unwrap();
    assert_eq!(out.logits.size(), [1, 3]);
    let vars = vs.variables();
    let scores: Vec<f64> = rows
        .iter()
        .map(|r| {
            let h = model.gpt.hidden(Input::Tokens(&Tensor::from_slice(r).view([1, -1])), Pass::default()).unwrap();
            let last = h.get(0).get(r.len() as i64 - 1).unsqueeze(0);
            last.linear(&vars["heads.t.weight"], Some(&vars["heads.t.bias"])).double_value(&[0, 0])
        })
        .collect();
    let log_z = scores.iter().map(|s| s.exp()).sum::<f64>().ln();
    let want = log_z - scores[2];
    let got = out.task.double_value(&[]);
    assert!((got - want).abs() < 1e-5, "cross-entropy over the choices {got} vs {want}");
}

fn write_config(dir: &Path, init: &Path, max_steps: u64, extra_task: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"out_dir = "{out}"
init = "{init}"

[[tasks]]
name = "scene_entailment"
train_examples = 24
{extra_task}

[finetune]
val_examples = 8
test_examples = 12
too_long = "truncate"
{extra}

[train]
batch_size = 4
max_steps = {max_steps}
decay_steps = 6
eval_interval = 3
ckpt_interval = 3
log_interval = 1
device = "cpu"
threads = 1
peak_tflops = 1.0
"#,
        out = dir.join("run").display(),
        init = init.display()
    );
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("ft_{max_steps}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn finetuning_resumes_exactly_and_its_checkpoint_still_samples() {
    let root = persistent_tempdir();
    let init = gpt_ckpt(&root, 448);
    let (straight, split) = (root.join("straight"), root.join("split"));
    run_ok(&["finetune", "--config", write_config(&straight, &init, 6, "", "").to_str().unwrap()]);
    run_ok(&["finetune", "--config", write_config(&split, &init, 3, "", "").to_str().unwrap()]);
    let out = run_ok(&["finetune", "--config", write_config(&split, &init, 6, "", "").to_str().unwrap(), "--resume"]);
    assert!(out.contains("scene_entailment: acc"), "{out}");
    for f in ["model.safetensors", "optimizer.safetensors"] {
        assert_same(&straight.join("run/checkpoint").join(f), &split.join("run/checkpoint").join(f));
    }
    let ckpt = split.join("run/checkpoint");
    let cfg: FinetunedConfig = checkpoint::read_config(&ckpt).unwrap();
    let tok = Tokenizer::from_file(&ckpt.join("tokenizer.json")).unwrap();
    assert_eq!(tok.token_to_id("<|extract|>").map(i64::from), Some(cfg.extract_token));
    assert_eq!(cfg.gpt.vocab_size, 448, "the added tokens take padding rows");
    // lm-eval's results layout, with calibration.
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(split.join("run/eval/results.json")).unwrap()).unwrap();
    let r = &results["results"]["scene_entailment"];
    assert!(r["acc,none"].is_f64() && r["ece,none"].is_f64() && r["acc_stderr,none"].is_f64(), "{r}");
    let samples = gptlab::jsonl::read_jsonl(&split.join("run/eval/samples_scene_entailment.jsonl")).unwrap();
    assert_eq!(samples.len(), 12);
    assert!(split.join("run/eval/reliability_scene_entailment.png").is_file(), "a reliability diagram per task");
    // The LM is intact: sampling and scoring take the fine-tuned checkpoint as a GPT.
    let c = ckpt.to_str().unwrap();
    let text = run_ok(&["sample", "--ckpt", c, "--prompt", "There is", "--max-new-tokens", "5", "--device", "cpu"]);
    assert!(!text.trim().is_empty());
    // A finished run is not trained again.
    assert!(run_err(&["finetune", "--config", write_config(&split, &init, 6, "", "").to_str().unwrap(), "--resume"])
        .contains("already at step 6"));
}

#[test]
fn two_ranks_fine_tune_two_tasks_like_one_process_even_through_a_batch_of_one() {
    // 21 and 9 examples in batches of 4: each task's epoch ends in a batch of one, which leaves
    // rank 1 a weightless stand-in row; the task and LM losses are weighted by their own counts.
    // A step trains one task's head, so the other's has no gradient on any rank, and AdamW
    // leaves it alone as in one process.
    let root = persistent_tempdir();
    let init = gpt_ckpt_with_dropout(&root, 448, 0.0);
    let second = "\n[[tasks]]\nname = \"review_sentiment\"\ntrain_examples = 9";
    let config = |dir: &Path| {
        let path = write_config(dir, &init, 9, second, "head_dropout = 0.0");
        let text = std::fs::read_to_string(&path).unwrap().replace("train_examples = 24", "train_examples = 21");
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let (one, two) = (root.join("one"), root.join("two"));
    run_ok(&["finetune", "--config", &config(&one)]);
    let out = run_ok(&["launch", "--nproc", "2", "--", "finetune", "--config", &config(&two)]);
    assert_eq!(out.matches("scene_entailment: acc").count(), 1, "rank 0 alone reports: {out}");
    crate::dist::assert_runs_match(&one.join("run"), &two.join("run"), 1e-5);
    let results = |dir: &Path| std::fs::read_to_string(dir.join("run/eval/results.json")).unwrap();
    for task in ["scene_entailment", "review_sentiment"] {
        let acc =
            |dir: &Path| serde_json::from_str::<Value>(&results(dir)).unwrap()["results"][task]["acc,none"].clone();
        assert!(acc(&one).is_f64(), "{task}");
        assert_eq!(acc(&one), acc(&two), "{task}");
    }
}

#[test]
fn added_tokens_grow_the_embedding_when_the_padding_rows_are_full_and_keep_the_pretrained_rows() {
    let root = persistent_tempdir();
    let n = Tokenizer::from_file(&tokenizer_path()).unwrap().vocab_size() as i64;
    let init = gpt_ckpt(&root, n);
    let cfg = write_config(&root, &init, 1, "[[tasks]]\nname = \"scene_qa\"\ntrain_examples = 8", "lm_coef = 0.0");
    let out = run_ok(&["finetune", "--config", cfg.to_str().unwrap()]);
    assert!(out.contains("scene_entailment: acc") && out.contains("scene_qa: acc"), "{out}");
    let ckpt = root.join("run/checkpoint");
    let c: FinetunedConfig = checkpoint::read_config(&ckpt).unwrap();
    assert_eq!(c.gpt.vocab_size, (n + 5 + 63) / 64 * 64, "3 GPT-1 tokens and 2 task tokens need new rows");
    assert_eq!(
        c.heads.iter().map(|h| h.task_token.is_some()).collect::<Vec<_>>(),
        [true, true],
        "multitask: task tokens"
    );
    let before = Tensor::read_safetensors(init.join("model.safetensors")).unwrap();
    let after = Tensor::read_safetensors(ckpt.join("model.safetensors")).unwrap();
    let wte = |t: &[(String, Tensor)]| t.iter().find(|(k, _)| k == "transformer.wte.weight").unwrap().1.shallow_clone();
    assert_eq!(wte(&after).size()[0], c.gpt.vocab_size);
    // One step of training moved the rows a little, but they started as the pretrained ones.
    let drift = (wte(&after).narrow(0, 0, n) - wte(&before)).abs().max().double_value(&[]);
    assert!(drift < 0.05, "pretrained rows drifted by {drift}");
}

#[test]
fn bad_fine_tuning_input_is_a_one_line_error() {
    let root = persistent_tempdir();
    let init = gpt_ckpt(&root, 448);
    let records = |name: &str, recs: &[Value]| {
        let p = root.join(name);
        gptlab::jsonl::write_jsonl(&p, recs).unwrap();
        p.display().to_string()
    };
    let train =
        records("train.jsonl", &[json!({"text": "good", "label": "pos"}), json!({"text": "bad", "label": "meh"})]);
    let val = records("val.jsonl", &[json!({"text": "fine", "label": 0})]);
    let user = |t: &str| {
        format!("name = \"mine\"\ntype = \"{t}\"\ntrain = \"{train}\"\nval = \"{val}\"\nclasses = [\"neg\", \"pos\"]")
    };
    let cfg = |task: &str| {
        let text =
            format!("out_dir = \"{}\"\ninit = \"{}\"\n[[tasks]]\n{task}\n", root.join("bad").display(), init.display());
        let p = root.join("bad.toml");
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let err = run_err(&["finetune", "--config", &cfg(&user("classification"))]);
    assert!(err.contains("train.jsonl record 2: label \"meh\" is not one of the classes"), "{err}");
    let err = run_err(&["finetune", "--config", &cfg(&user("regression"))]);
    assert!(err.contains("regression") && err.contains("classification"), "{err}");
    let mc = records(
        "mc.jsonl",
        &[
            json!({"context": "c", "choices": ["a", "b"], "label": 0}),
            json!({"context": "c", "choices": ["a", "b", "c"], "label": 0}),
        ],
    );
    let err = run_err(&[
        "finetune",
        "--config",
        &cfg(&format!("name = \"m\"\ntype = \"multiple_choice\"\ntrain = \"{mc}\"\nval = \"{mc}\"")),
    ]);
    assert!(err.contains("mc.jsonl record 2: has 3 choices, but the task's records have 2"), "{err}");
    let err = run_err(&["finetune", "--config", &cfg("name = \"nope\"")]);
    assert!(err.contains("give its type"), "{err}");
    let err = run_err(&["finetune", "--config", &cfg("name = \"scene_qa\"\ntrain_examples = 0")]);
    assert!(err.contains("train_examples must be positive"), "{err}");
    let long = records("long.jsonl", &[json!({"text": "There is a red circle. ".repeat(40), "label": 1})]);
    let err = run_err(&[
        "finetune",
        "--config",
        &cfg(&format!(
            "name = \"l\"\ntype = \"classification\"\ntrain = \"{long}\"\nval = \"{long}\"\nclasses = [\"a\", \"b\"]"
        )),
    ]);
    assert!(
        err.contains("long.jsonl record 1")
            && err.contains("longer than the model's context of 128")
            && err.contains("truncate"),
        "{err}"
    );
    assert!(!root.join("bad/checkpoint").exists(), "nothing trained");
}

#[test]
fn paradigms_are_compared_from_their_results_files() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, v: Value| {
        let p = dir.path().join(name).join("results.json");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, v.to_string()).unwrap();
    };
    let acc = |a: f64| json!({"acc,none": a, "acc_stderr,none": 0.02});
    let ft = |labelled: usize, lm: f64, results: Value| json!({"results": results, "config": {"model": "gptlab-finetuned", "labelled_examples": labelled, "params_trained": 1000, "lm_coef": lm}});
    write("ft-a", ft(100, 0.5, json!({"a": acc(0.7)})));
    write("ft-b", ft(100, 0.5, json!({"b": acc(0.6)})));
    write("ft-a-nolm", ft(100, 0.0, json!({"a": acc(0.65)})));
    write("multi", ft(200, 0.5, json!({"a": acc(0.8), "b": acc(0.5)})));
    write(
        "prompted/m/4shot",
        json!({"results": {"a": acc(0.55), "b": acc(0.45)}, "n-shot": {"a": 4, "b": 4}, "config": {}}),
    );
    let out = dir.path().join("report");
    run_ok(&["paradigms", "--results", dir.path().to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let md = std::fs::read_to_string(out.join("paradigms.md")).unwrap();
    for row in [
        "| fine-tuned | 100 | 0.700 ± 0.020 | 0.600 ± 0.020 | 0.650 | 2k | 200 | 2 (one per task) |",
        "| fine-tuned, no LM loss | 100 | 0.650 ± 0.020 | – | 0.650 | 1k | 100 | 1 (one per task) |",
        "| multitask | 100 | 0.800 ± 0.020 | 0.500 ± 0.020 | 0.650 | 1k | 200 | 1 |",
        "| prompted | K = 4 | 0.550 ± 0.020 | 0.450 ± 0.020 | 0.500 | 0 | 4 per prompt |",
    ] {
        assert!(md.contains(row), "missing {row} in\n{md}");
    }
    assert_eq!(gptlab::jsonl::read_jsonl(&out.join("paradigms.jsonl")).unwrap().len(), 7);
    assert!(out.join("accuracy_vs_examples.png").is_file() && out.join("accuracy_vs_examples_a.svg").is_file());
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"x\": 1}").unwrap();
    let err = run_err(&["paradigms", "--results", bad.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(err.contains("is not a results file"), "{err}");
}
