//! Few-shot evaluation: task files read as lm-eval reads them, broken ones as one-line errors,
//! prompts and scores by lm-eval's rules on cases checked by hand, batch-size invariance, and
//! results in lm-eval's layout.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use gptlab::checkpoint;
use gptlab::eval::harness::{self, RunOptions};
use gptlab::eval::model::EvalModel;
use gptlab::eval::task::{Target, Task};
use gptlab::models::gpt::{Gpt, GptConfig, Input, Pass};
use indicatif::ProgressBar;
use serde_json::{json, Value};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::common::{persistent_tempdir, run_err, run_ok, shard_dir};

/// A nano GPT with random weights and the test corpus's tokenizer, context 64.
fn gpt_ckpt() -> &'static Path {
    static CKPT: OnceLock<PathBuf> = OnceLock::new();
    CKPT.get_or_init(|| {
        let dir = persistent_tempdir().join("gpt");
        let tok = shard_dir().parent().unwrap().join("tokenizer.json");
        tch::manual_seed(11);
        let vs = VarStore::new(Device::Cpu);
        let cfg = GptConfig { vocab_size: 448, block_size: 64, dropout: 0.0, ..GptConfig::preset("nano").unwrap() };
        Gpt::new(&cfg, vs.root()).unwrap();
        checkpoint::save_model(&dir, &vs, &cfg, Some(&tok)).unwrap();
        dir
    })
}

fn model() -> EvalModel {
    EvalModel::load(gpt_ckpt(), Device::Cpu).unwrap()
}

/// A task file `t.yaml` (its header names `t_test.jsonl` and `t_train.jsonl`) in a fresh folder.
fn task_dir(body: &str, test: &[Value], train: &[Value]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "task: t\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: t_test.jsonl\n    train: t_train.jsonl\ntest_split: test\nfewshot_split: train\n{body}"
    );
    std::fs::write(dir.path().join("t.yaml"), yaml).unwrap();
    let lines = |docs: &[Value]| docs.iter().map(|d| d.to_string() + "\n").collect::<String>();
    std::fs::write(dir.path().join("t_test.jsonl"), lines(test)).unwrap();
    std::fs::write(dir.path().join("t_train.jsonl"), lines(train)).unwrap();
    let path = dir.path().join("t.yaml");
    (dir, path)
}

fn qa_docs(n: usize) -> Vec<Value> {
    (0..n).map(|i| json!({"q": format!("What is {i} plus {i}?"), "a": (2 * i).to_string(), "options": ["red", "blue square", "green"], "label": i % 3})).collect()
}

fn opts(batch_size: usize) -> RunOptions {
    RunOptions { limit: None, batch_size, seed: 1234 }
}

#[test]
fn templates_fields_and_choice_indices_render_as_lm_eval_renders_them() {
    let docs = vec![json!({"q": "Is it red?", "options": ["yes", "no"], "label": 1, "answer": "0", "who": "Ann"})];
    let (_d, path) = task_dir(
        "output_type: multiple_choice\ndescription: \"Questions for {{who}}.\\n\\n\"\ndoc_to_text: \"Q: {{q}}\\nA:\"\ndoc_to_choice: \"{{options}}\"\ndoc_to_target: label\n",
        &docs,
        &docs,
    );
    let task = Task::from_file(&path).unwrap();
    let doc = &task.docs[0];
    assert_eq!(task.text(doc).unwrap(), "Q: Is it red?\nA:");
    assert_eq!(task.description(doc).unwrap(), "Questions for Ann.\n\n");
    assert_eq!(task.choices(doc).unwrap(), vec!["yes", "no"]);
    assert_eq!(task.target(doc).unwrap(), Target::Index(1));
    assert_eq!(task.target_text(doc).unwrap(), "no");

    // A rendered digit string indexes the choices; a literal list and a map of templates give
    // the choices in order; an integer doc_to_target is an index.
    let (_d, path) = task_dir(
        "output_type: multiple_choice\ndoc_to_text: q\ndoc_to_choice: [\"{{who}}\", \"Bob\"]\ndoc_to_target: \"{{answer}}\"\n",
        &docs,
        &docs,
    );
    let task = Task::from_file(&path).unwrap();
    assert_eq!(task.choices(&task.docs[0]).unwrap(), vec!["Ann", "Bob"]);
    assert_eq!(task.target(&task.docs[0]).unwrap(), Target::Index(0));
    let (_d, path) = task_dir(
        "output_type: multiple_choice\ndoc_to_text: q\ndoc_to_choice: {a: \"x\", b: \"{{who}}\"}\ndoc_to_target: 1\n",
        &docs,
        &docs,
    );
    let task = Task::from_file(&path).unwrap();
    assert_eq!(task.choices(&task.docs[0]).unwrap(), vec!["x", "Ann"]);
    assert_eq!(task.target_text(&task.docs[0]).unwrap(), "Ann");
    // Without choices, a number stays text; lm-eval's regex_replace filter is there.
    let (_d, path) =
        task_dir("doc_to_text: \"{{q | regex_replace('[?]', '!')}}\"\ndoc_to_target: label\n", &docs, &docs);
    let task = Task::from_file(&path).unwrap();
    assert_eq!(task.target(&task.docs[0]).unwrap(), Target::Text("1".into()));
    assert_eq!(task.text(&task.docs[0]).unwrap(), "Is it red!");
}

#[test]
fn broken_task_files_are_one_line_errors_and_leave_no_output() {
    let ckpt = gpt_ckpt().to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("eval");
    let docs = qa_docs(4);
    let cases: Vec<(&str, Vec<Value>, &str)> = vec![
        (
            "doc_to_text: q\ndoc_to_target: a\nprocess_docs: !function utils.p\n",
            docs.clone(),
            "key `process_docs` is not supported",
        ),
        ("doc_to_text: \"{{question}}\"\ndoc_to_target: a\n", docs.clone(), "test document 1: key `doc_to_text`"),
        (
            "output_type: multiple_choice\ndoc_to_text: q\ndoc_to_choice: q\ndoc_to_target: 0\n",
            docs.clone(),
            "key `doc_to_choice` must give a list",
        ),
        (
            "output_type: multiple_choice\ndoc_to_text: q\ndoc_to_choice: options\ndoc_to_target: 7\n",
            docs.clone(),
            "index 7, but there are 3 choices",
        ),
        ("output_type: sampling\ndoc_to_text: q\ndoc_to_target: a\n", docs.clone(), "key `output_type`"),
        ("doc_to_text: q\ndoc_to_target: a\ngeneration_kwargs: {do_sample: true}\n", docs.clone(), "greedily"),
        (
            "doc_to_text: q\ndoc_to_target: a\nmetric_list: [{metric: bleu}]\n",
            docs.clone(),
            "metric `bleu` does not apply",
        ),
        ("doc_to_text: q\ndoc_to_target: a\ndoc_to_image: q\n", docs.clone(), "key `doc_to_image`: image"),
        ("doc_to_text: q\ndoc_to_target: a\nfilter_list: [{name: g, filter: [{function: regex, regex_pattern: '(x'}]}]\n", docs.clone(), "key `filter_list.regex_pattern`"),
    ];
    for (body, test, expected) in cases {
        let (_d, path) = task_dir(body, &test, &docs);
        let err =
            run_err(&["eval", "--ckpt", ckpt, "--tasks", path.to_str().unwrap(), "--out", dest.to_str().unwrap()]);
        assert!(err.contains(expected), "{body}: {err}");
        assert!(err.contains("t.yaml"), "the error names the file: {err}");
        let args = ["eval", "--ckpt", ckpt, "--tasks", path.to_str().unwrap(), "--out", dest.to_str().unwrap()];
        let stderr = String::from_utf8(crate::common::gptlab(&args).stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(!dest.exists(), "{body}: the output directory was created");
    }
    let (d, path) = task_dir("doc_to_text: q\ndoc_to_target: a\n", &docs, &docs);
    std::fs::remove_file(d.path().join("t_train.jsonl")).unwrap();
    let err = run_err(&["eval", "--ckpt", ckpt, "--tasks", path.to_str().unwrap(), "--out", dest.to_str().unwrap()]);
    assert!(err.contains("dataset_kwargs.data_files.train") && err.contains("does not exist"), "{err}");
    let (_d, path) = task_dir("doc_to_text: q\ndoc_to_target: a\n", &docs, &docs[..2]);
    let err = run_err(&[
        "eval",
        "--ckpt",
        ckpt,
        "--tasks",
        path.to_str().unwrap(),
        "--shots",
        "3",
        "--out",
        dest.to_str().unwrap(),
    ]);
    assert!(err.contains("3 shots asked") && err.contains("at most 2"), "{err}");
    let err = run_err(&["eval", "--ckpt", ckpt, "--tasks", "arithmetic_9da", "--out", dest.to_str().unwrap()]);
    assert!(err.contains("unknown task"), "{err}");
    assert!(!dest.exists());
}

#[test]
fn prompts_are_description_shots_and_query_and_never_show_the_document_itself() {
    let docs: Vec<Value> = (0..6).map(|i| json!({"q": i.to_string(), "a": (2 * i).to_string()})).collect();
    // Shots from the scored split itself.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.yaml"),
        "task: t\ndataset_kwargs:\n  data_files:\n    test: t.jsonl\ntest_split: test\ndescription: \"Sums.\\n\\n\"\ndoc_to_text: \"Q: {{q}} A:\"\ndoc_to_target: a\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("t.jsonl"), docs.iter().map(|d| d.to_string() + "\n").collect::<String>()).unwrap();
    let task = Task::from_file(&dir.path().join("t.yaml")).unwrap();
    let model = model();
    for i in 0..docs.len() {
        let p3 = harness::build_prompt(&task, &model, i, 3, 1234, 0).unwrap();
        let p1 = harness::build_prompt(&task, &model, i, 1, 1234, 0).unwrap();
        assert_eq!(p3.k_used, 3);
        assert!(!p3.shots.contains(&i), "document {i} is its own shot: {:?}", p3.shots);
        assert_eq!(p1.shots[..], p3.shots[..1], "shots nest across K");
        let shots: String = p3.shots.iter().map(|&s| format!("Q: {s} A: {}\n\n", 2 * s)).collect();
        assert_eq!(p3.context, format!("Sums.\n\n{shots}Q: {i} A:"));
    }
    // Another seed draws other shots.
    let other: Vec<Vec<usize>> =
        (0..6).map(|i| harness::build_prompt(&task, &model, i, 3, 7, 0).unwrap().shots).collect();
    let same: Vec<Vec<usize>> =
        (0..6).map(|i| harness::build_prompt(&task, &model, i, 3, 1234, 0).unwrap().shots).collect();
    assert_ne!(other, same);
}

#[test]
fn context_whitespace_moves_to_the_continuation_as_in_lm_eval() {
    let model = model();
    let (ctx, cont) = harness::encode_pair(&model, "Q: 2 plus 2? A: ", "4").unwrap();
    let whole = model.encode("Q: 2 plus 2? A: 4").unwrap();
    assert_eq!(ctx, model.encode("Q: 2 plus 2? A:").unwrap());
    assert_eq!([ctx.clone(), cont.clone()].concat(), whole);
    let (ctx, cont) = harness::encode_pair(&model, "", " red").unwrap();
    assert_eq!(ctx, vec![model.eot()]);
    assert_eq!(cont, model.encode(" red").unwrap());
}

/// log P(tokens[from..] | tokens[..from]) by one forward pass of the model, the definition.
fn direct_loglikelihood(ckpt: &Path, tokens: &[i64], from: usize) -> f64 {
    let loaded = checkpoint::load::<Gpt>(ckpt, Device::Cpu).unwrap();
    let x = Tensor::from_slice(&tokens[..tokens.len() - 1]).unsqueeze(0);
    let logp = tch::no_grad(|| loaded.model.forward(Input::Tokens(&x), Pass::default()).unwrap())
        .log_softmax(-1, Kind::Double);
    (from..tokens.len()).map(|t| logp.double_value(&[0, t as i64 - 1, tokens[t]])).sum()
}

#[test]
fn choice_loglikelihoods_are_the_joint_encodings_and_do_not_depend_on_the_batch_size() {
    let docs = qa_docs(12);
    let (_d, path) = task_dir(
        "output_type: multiple_choice\ndoc_to_text: \"Q: {{q}} A:\"\ndoc_to_choice: options\ndoc_to_target: label\nmetric_list: [{metric: acc}, {metric: acc_norm}, {metric: acc_mutual_info}]\n",
        &docs,
        &docs,
    );
    let task = Task::from_file(&path).unwrap();
    let model = model();
    let bar = ProgressBar::hidden();
    let one = harness::evaluate(&model, &task, 2, &opts(1), &bar).unwrap();
    let many = harness::evaluate(&model, &task, 2, &opts(32), &bar).unwrap();
    for (a, b) in one.samples.iter().zip(&many.samples) {
        assert_eq!(a.prediction, b.prediction);
        for (x, y) in a
            .loglikelihoods
            .iter()
            .zip(&b.loglikelihoods)
            .chain(a.unconditional_loglikelihoods.iter().zip(&b.unconditional_loglikelihoods))
        {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }
    // The second choice of the first document, computed from its definition.
    let s = &one.samples[0];
    let whole = model.encode(&format!("{} blue square", s.prompt)).unwrap();
    let ctx = model.encode(&s.prompt).unwrap();
    assert!((direct_loglikelihood(gpt_ckpt(), &whole, ctx.len()) - s.loglikelihoods[1]).abs() < 1e-4);
    // acc is the argmax of the log-likelihoods, acc_norm of them per character.
    for s in &one.samples {
        let lls = &s.loglikelihoods;
        let best = (0..3).max_by(|&i, &j| lls[i].total_cmp(&lls[j])).unwrap();
        assert_eq!(s.prediction, s.choices[best]);
        let gold = s.choices.iter().position(|c| *c == s.target).unwrap();
        assert_eq!(s.metrics["acc"], (best == gold) as u8 as f64);
        let norm = (0..3)
            .max_by(|&i, &j| (lls[i] / s.choices[i].len() as f64).total_cmp(&(lls[j] / s.choices[j].len() as f64)))
            .unwrap();
        assert_eq!(s.metrics["acc_norm"], (norm == gold) as u8 as f64);
    }
    // Calibration: the confidence is the softmax of the choices' log-likelihoods at the argmax,
    // and ECE bins (confidence, right) over 10 equal-width bins.
    let mut pairs = Vec::new();
    for s in &one.samples {
        let z: f64 = s.loglikelihoods.iter().map(|l| l.exp()).sum();
        let best = s.loglikelihoods.iter().cloned().fold(f64::MIN, f64::max);
        assert!((s.confidence.unwrap() - best.exp() / z).abs() < 1e-9);
        pairs.push((s.confidence.unwrap(), s.prediction == s.target));
    }
    let mut ece = 0.0;
    for b in 0..10 {
        let inside: Vec<&(f64, bool)> = pairs.iter().filter(|p| ((p.0 * 10.0) as usize).min(9) == b).collect();
        if !inside.is_empty() {
            let n = inside.len() as f64;
            let conf = inside.iter().map(|p| p.0).sum::<f64>() / n;
            let acc = inside.iter().filter(|p| p.1).count() as f64 / n;
            ece += n / 12.0 * (acc - conf).abs();
        }
    }
    assert!((one.metric("ece").unwrap().value - ece).abs() < 1e-12);
    let acc = one.metric("acc").unwrap();
    let xs: Vec<f64> = one.samples.iter().map(|s| s.metrics["acc"]).collect();
    let mean = xs.iter().sum::<f64>() / 12.0;
    let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 11.0).sqrt();
    assert!((acc.value - mean).abs() < 1e-12 && (acc.stderr.unwrap() - sd / 12f64.sqrt()).abs() < 1e-12);
}

#[test]
fn generations_do_not_depend_on_the_batch_size_and_stop_at_the_stop_string() {
    let docs = qa_docs(10);
    let (_d, path) = task_dir(
        "doc_to_text: \"Q: {{q}} A:\"\ndoc_to_target: a\ngeneration_kwargs: {until: [\"e\"], max_gen_toks: 6}\nfilter_list: [{name: digits, filter: [{function: regex, regex_pattern: '(\\d+)', fallback: '?'}]}]\n",
        &docs,
        &docs,
    );
    let task = Task::from_file(&path).unwrap();
    let model = model();
    let bar = ProgressBar::hidden();
    let one = harness::evaluate(&model, &task, 1, &opts(1), &bar).unwrap();
    let many = harness::evaluate(&model, &task, 1, &opts(32), &bar).unwrap();
    for (a, b) in one.samples.iter().zip(&many.samples) {
        assert_eq!(a.prediction, b.prediction);
        assert!(!a.prediction.contains('e'), "{:?}", a.prediction);
        assert!((a.loglikelihoods[0] - b.loglikelihoods[0]).abs() < 1e-5);
    }
    assert!(one.metric("exact_match").is_some() && one.metric("log_pass_rate").is_some());
    // The filter pipeline's metric is scored on each prediction after the filter.
    let digits = one.metrics.iter().find(|m| m.filter == "digits").expect("a filtered metric");
    let mut right = 0.0;
    for s in &one.samples {
        let first = s.prediction.split(|c: char| !c.is_ascii_digit()).find(|p| !p.is_empty()).unwrap_or("?");
        assert_eq!(s.filtered["digits"], first, "{:?}", s.prediction);
        right += (first == s.target) as u8 as f64;
    }
    assert!((digits.value - right / one.samples.len() as f64).abs() < 1e-12);
}

#[test]
fn shots_shrink_per_document_to_fit_the_context_and_the_k_used_is_reported() {
    let long: Vec<Value> = (0..10)
        .map(|i| json!({"q": format!("the red circle and the blue square and the green star number {i}"), "a": "yes"}))
        .collect();
    let (_d, path) = task_dir("output_type: loglikelihood\ndoc_to_text: q\ndoc_to_target: \" yes\"\n", &long, &long);
    let task = Task::from_file(&path).unwrap();
    let model = model();
    let score = harness::evaluate(&model, &task, 8, &opts(4), &ProgressBar::hidden()).unwrap();
    for s in &score.samples {
        assert!(s.k_used < 8, "{}", s.k_used);
        let used = model.encode(&s.prompt).unwrap().len() + model.encode(" yes").unwrap().len();
        assert!(used <= 64, "{used} positions");
        // The prompt with one shot more, by hand (a loglikelihood target keeps its own space
        // after the target delimiter, as in lm-eval), would not have fitted.
        let order = harness::shot_order(&task, 1234, s.doc_id);
        let shots: String =
            order[..s.k_used + 1].iter().map(|&j| format!("{}  yes\n\n", long[j]["q"].as_str().unwrap())).collect();
        let one_more = format!("{shots}{}", long[s.doc_id]["q"].as_str().unwrap());
        let reserve = model.encode(" yes").unwrap().len();
        assert!(model.encode(&one_more).unwrap().len() + reserve > 64, "K could have been larger");
    }
    assert!(score.k_used_mean() < 8.0);
}

#[test]
fn rolling_loglikelihood_scores_disjoint_windows_after_end_of_text() {
    let model = model();
    // Between one and two contexts of tokens.
    let mut text = String::new();
    for i in 0.. {
        text.push_str(&format!("word{i} "));
        if model.encode(&text).unwrap().len() > 80 {
            break;
        }
    }
    let docs = vec![json!({"text": text})];
    let (_d, path) = task_dir("output_type: loglikelihood_rolling\ndoc_to_target: text\n", &docs, &docs);
    let task = Task::from_file(&path).unwrap();
    let tokens = model.encode(&text).unwrap();
    assert!(tokens.len() > 64 && tokens.len() < 128, "{} tokens", tokens.len());
    let score = harness::evaluate(&model, &task, 0, &opts(8), &ProgressBar::hidden()).unwrap();
    // Window 1: end-of-text then the first 64 tokens; window 2: the rest after what the disjoint
    // cut leaves of the 64 tokens before its last one.
    let first = [vec![model.eot()], tokens[..64].to_vec()].concat();
    let end = tokens.len();
    let second = tokens[end - 65..].to_vec();
    let expected =
        direct_loglikelihood(gpt_ckpt(), &first, 1) + direct_loglikelihood(gpt_ckpt(), &second, 65 - (end - 64));
    assert!(
        (score.samples[0].loglikelihoods[0] - expected).abs() < 1e-4,
        "{} vs {expected}",
        score.samples[0].loglikelihoods[0]
    );
    let words = text.split_whitespace().count() as f64 + 1.0; // the trailing space adds an empty piece
    let wp = score.metric("word_perplexity").unwrap().value;
    assert!((wp - (-expected / words).exp()).abs() < 1e-6 * wp);
}

#[test]
fn results_use_lm_eval_keys_samples_and_a_report_with_the_k_plot() {
    let ckpt = gpt_ckpt().to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("eval");
    let docs = qa_docs(8);
    let (_d, path) = task_dir(
        "output_type: multiple_choice\ndoc_to_text: q\ndoc_to_choice: options\ndoc_to_target: label\n",
        &docs,
        &docs,
    );
    let tasks = format!("{},arithmetic_2da", path.display());
    let args = |shots: &str| {
        vec![
            "eval",
            "--ckpt",
            ckpt,
            "--tasks",
            &tasks,
            "--shots",
            shots,
            "--limit",
            "5",
            "--out",
            dest.to_str().unwrap(),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let a = args("0,2");
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(dest.join("gpt/2shot/results.json")).unwrap()).unwrap();
    let t = &results["results"]["t"];
    assert!(t["acc,none"].is_number() && t["acc_stderr,none"].is_number() && t["acc_norm,none"].is_number(), "{t}");
    assert!(results["results"]["arithmetic_2da"]["exact_match,none"].is_number());
    // Calibration comes with every multiple-choice task, with its reliability diagram.
    assert!(t["ece,none"].is_number() && t["ece_stderr,none"].is_number(), "{t}");
    assert!(dest.join("gpt/2shot/reliability_t.png").is_file() && dest.join("gpt/2shot/reliability_t.svg").is_file());
    assert_eq!(results["n-shot"]["t"], 2);
    assert_eq!(results["configs"]["t"]["doc_to_choice"], "options");
    assert_eq!(results["configs"]["t"]["target_delimiter"], " ");
    assert_eq!(results["n-samples"]["t"]["effective"], 5);
    assert_eq!(results["config"]["random_seed"], 1234);
    assert!(results.get("git_hash").is_some());
    let samples = std::fs::read_to_string(dest.join("gpt/2shot/samples_t.jsonl")).unwrap();
    assert_eq!(samples.lines().count(), 5);
    let first: Value = serde_json::from_str(samples.lines().next().unwrap()).unwrap();
    assert_eq!(first["loglikelihoods"].as_array().unwrap().len(), 3);
    assert_eq!(first["k_used"], 2);
    let report = std::fs::read_to_string(dest.join("report.md")).unwrap();
    assert!(report.contains("| t | acc | gpt | 5 |") && report.contains("k_t.png"), "{report}");
    assert!(dest.join("k_arithmetic_2da.svg").is_file() && dest.join("summary.jsonl").is_file());
    // Tasks on a steps axis (metadata.steps and series) get a table and a plot against steps.
    assert!(report.contains("## Against the number of steps") && report.contains("| gpt | direct |"), "{report}");
    assert!(dest.join("steps_0shot.png").is_file() && dest.join("steps_2shot.svg").is_file());
    assert!(!dest.join("results.json").exists(), "two K: results per K only");
    // One model at one K: results.json at the top too; the earlier evaluation is replaced.
    let a = args("1");
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(dest.join("results.json").is_file() && !dest.join("gpt/2shot").exists());
    // A directory that is not an evaluation is never replaced.
    let other = out.path().join("notes");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("keep.txt"), "mine").unwrap();
    let err = run_err(&[
        "eval",
        "--ckpt",
        ckpt,
        "--tasks",
        "arithmetic_2da",
        "--limit",
        "2",
        "--out",
        other.to_str().unwrap(),
    ]);
    assert!(err.contains("is not a gptlab evaluation"), "{err}");
}

/// A tiny VLM with random weights (32 px images, 16 tokens each) and the corpus's tokenizer.
fn vlm_ckpt() -> &'static Path {
    static CKPT: OnceLock<PathBuf> = OnceLock::new();
    CKPT.get_or_init(|| {
        use gptlab::models::vlm::{FeatureSelect, ProjectorKind, Vlm, VlmConfig};
        let dir = persistent_tempdir().join("vlm");
        let tok = shard_dir().parent().unwrap().join("tokenizer.json");
        let clip = gptlab_vision::clip::ClipConfig::preset("tiny", 448, 0).unwrap();
        let cfg = VlmConfig {
            vision: clip.vision,
            text: GptConfig { vocab_size: 448, block_size: 160, ..GptConfig::preset("nano").unwrap() },
            projector: ProjectorKind::Linear,
            vision_feature_layer: -2,
            select: FeatureSelect::Patches,
            image_token_id: 2,
            image_mean: clip.image_mean,
            image_std: clip.image_std,
        };
        tch::manual_seed(3);
        let vs = VarStore::new(Device::Cpu);
        Vlm::new(&cfg, vs.root()).unwrap();
        checkpoint::save_model(&dir, &vs, &cfg, Some(&tok)).unwrap();
        dir
    })
}

#[test]
fn multimodal_tasks_score_a_vlm_on_the_same_path_and_refuse_a_text_model() {
    let model = EvalModel::load(vlm_ckpt(), Device::Cpu).unwrap();
    let bar = ProgressBar::hidden();
    let task = gptlab::eval::load_task("gauge_reading_3").unwrap();
    let opts = |b| RunOptions { limit: Some(6), batch_size: b, seed: 1234 };
    let one = harness::evaluate(&model, &task, 2, &opts(1), &bar).unwrap();
    let many = harness::evaluate(&model, &task, 2, &opts(8), &bar).unwrap();
    for (a, b) in one.samples.iter().zip(&many.samples) {
        assert_eq!(a.k_used, 2);
        assert_eq!(a.prompt.matches("<image>").count(), 3, "{}", a.prompt);
        assert!(
            a.prompt.starts_with("<|user|>\n<image>\nIt reads ")
                && a.prompt.ends_with("What does it read?<|endoftext|><|assistant|>\n")
        );
        assert_eq!(a.prediction, b.prediction);
        assert!((a.loglikelihoods[0] - b.loglikelihoods[0]).abs() < 1e-5);
    }
    // A question about one picture, in the chat template.
    let vqa = gptlab::eval::load_task("vqa_count").unwrap();
    let score = harness::evaluate(&model, &vqa, 0, &opts(4), &bar).unwrap();
    assert_eq!(score.samples.len(), 6);
    let ckpt = gpt_ckpt().to_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let err =
        run_err(&["eval", "--ckpt", ckpt, "--tasks", "vqa_count", "--out", out.path().join("e").to_str().unwrap()]);
    assert!(err.contains("text-only GPT"), "{err}");
}
