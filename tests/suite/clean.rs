//! GPT-3's data cleaning: near-duplicate removal on the labelled synthetic crawl.

use std::collections::HashMap;
use std::path::Path;

use gptlab::clean::minhash::{jaccard, shingles};
use serde_json::Value;

use crate::common::{run_err, run_ok};

fn crawl(dir: &Path, pages: usize) -> Vec<Value> {
    run_ok(&["data", "synth-crawl", "--out", dir.to_str().unwrap(), "--pages", &pages.to_string()]);
    gptlab::jsonl::read_jsonl(&dir.join("crawl.jsonl")).unwrap()
}

fn dedup(input: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["clean", "dedup", "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_ok(&args)
}

#[test]
fn planted_duplicates_are_found_and_every_removal_is_a_true_near_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let pages = crawl(&dir.path().join("crawl"), 2000);
    let out = dir.path().join("dedup");
    dedup(&dir.path().join("crawl/crawl.jsonl"), &out, &["--verify"]);
    let removed: HashMap<String, Value> = gptlab::jsonl::read_jsonl(&out.join("removed.jsonl"))
        .unwrap()
        .into_iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r))
        .collect();
    let by_id: HashMap<&str, &Value> = pages.iter().map(|p| (p["id"].as_str().unwrap(), p)).collect();
    let text = |id: &str| by_id[id]["text"].as_str().unwrap().to_string();
    // Precision: with --verify, each removed page is within the threshold of the page it names.
    for (id, r) in &removed {
        let kept = r["duplicate_of"].as_str().unwrap();
        assert!(kept < id.as_str(), "{id} names a later page {kept}");
        let s = jaccard(&shingles(&text(id), 5), &shingles(&text(kept), 5));
        assert!(s >= 0.8, "{id} removed as a duplicate of {kept} at Jaccard {s}");
    }
    // Recall: every exact copy, and nearly every near copy well above the threshold.
    let (mut exact, mut near, mut near_found) = (0, 0, 0);
    for p in &pages {
        let id = p["id"].as_str().unwrap();
        match p["duplicate"].as_str() {
            Some("exact") => {
                exact += 1;
                assert!(removed.contains_key(id), "exact copy {id} kept");
            }
            Some("near") => {
                let s = jaccard(&shingles(&text(id), 5), &shingles(&text(p["copy_of"].as_str().unwrap()), 5));
                if s >= 0.9 {
                    near += 1;
                    near_found += removed.contains_key(id) as usize;
                }
            }
            _ => {}
        }
    }
    assert!(exact > 50 && near > 30, "{exact} exact, {near} near copies planted");
    assert!(near_found as f64 >= 0.9 * near as f64, "{near_found} of {near} near copies (Jaccard >= 0.9) found");
    let stats: Value = serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["removed"].as_u64().unwrap() as usize, removed.len());
    assert_eq!((stats["bands"].as_u64(), stats["rows"].as_u64()), (Some(9), Some(13)));
}

#[test]
fn the_result_depends_neither_on_threads_nor_on_how_the_shards_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let pages = crawl(&dir.path().join("crawl"), 1200);
    // Three shards, written in reverse order of their names.
    let shards = dir.path().join("shards");
    std::fs::create_dir_all(shards.join("b")).unwrap();
    let parts: Vec<&[Value]> = pages.chunks(400).collect();
    gptlab::jsonl::write_jsonl(&shards.join("b/2.jsonl"), parts[2]).unwrap();
    gptlab::jsonl::write_jsonl(&shards.join("b/1.jsonl"), parts[1]).unwrap();
    gptlab::jsonl::write_jsonl(&shards.join("a.jsonl"), parts[0]).unwrap();
    let read = |out: &Path, f: &str| std::fs::read_to_string(out.join(f)).unwrap();
    let one = dir.path().join("one");
    let many = dir.path().join("many");
    let whole = dir.path().join("whole");
    dedup(&shards, &one, &["--threads", "1"]);
    dedup(&shards, &many, &["--threads", "2"]);
    dedup(&dir.path().join("crawl/crawl.jsonl"), &whole, &[]);
    let records = |out: &Path, f: &str| gptlab::jsonl::read_jsonl(&out.join(f)).unwrap();
    for f in ["kept.jsonl", "removed.jsonl"] {
        assert_eq!(read(&one, f), read(&many, f), "{f}");
        // The shards hold the same records as the whole file, with their keys reordered.
        assert_eq!(records(&one, f), records(&whole, f), "{f}");
    }
    assert!(!read(&one, "removed.jsonl").is_empty());
}

#[test]
fn a_malformed_line_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"text\": \"one two three\"}\n{\"text\": \"four\"}\n{\"text\": oops}\n").unwrap();
    let out = dir.path().join("out");
    let err = run_err(&["clean", "dedup", "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(err.contains("in.jsonl:3") && err.contains("malformed JSON"), "{err}");
    assert!(!out.exists(), "output written for a bad input");
    // Decontamination streams its output, and checks the whole input before it writes.
    let err = run_err(&[
        "clean",
        "decontaminate",
        "--input",
        input.to_str().unwrap(),
        "--tasks",
        "review_sentiment",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("in.jsonl:3") && err.contains("malformed JSON"), "{err}");
    assert!(!out.exists(), "decontamination wrote output for a bad input");
    std::fs::write(&input, "{\"body\": \"one two three\"}\n").unwrap();
    let err = run_err(&["clean", "dedup", "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(err.contains("in.jsonl:1") && err.contains("--field"), "{err}");
    let err = run_err(&[
        "clean",
        "dedup",
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--threshold",
        "1.5",
    ]);
    assert!(err.contains("--threshold"), "{err}");
}

#[test]
fn the_quality_filter_keeps_articles_and_drops_low_quality_pages() {
    let dir = tempfile::tempdir().unwrap();
    let pages = crawl(&dir.path().join("crawl"), 3000);
    let arg = |p: &Path| p.to_str().unwrap().to_string();
    let (curated, raw) = (arg(&dir.path().join("crawl/curated.jsonl")), arg(&dir.path().join("crawl/crawl.jsonl")));
    let model = arg(&dir.path().join("model"));
    run_ok(&[
        "clean",
        "quality",
        "train",
        "--positives",
        &curated,
        "--negatives",
        &raw,
        "--out",
        &model,
        "--dims-log2",
        "18",
    ]);
    let kept_ids = |out: &str| -> Vec<String> {
        run_ok(&["clean", "quality", "filter", "--model", &model, "--input", &raw, "--out", out]);
        let kept = gptlab::jsonl::read_jsonl(&Path::new(out).join("kept.jsonl")).unwrap();
        kept.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
    };
    let a = kept_ids(&arg(&dir.path().join("f1")));
    assert_eq!(a, kept_ids(&arg(&dir.path().join("f2"))), "the seeded draws repeat");
    let share = |high: bool| {
        let of: Vec<&Value> = pages.iter().filter(|p| p["high_quality"].as_bool() == Some(high)).collect();
        of.iter().filter(|p| a.iter().any(|k| k == p["id"].as_str().unwrap())).count() as f64 / of.len() as f64
    };
    let (articles, low) = (share(true), share(false));
    assert!(articles > 0.02 && articles > 5.0 * low, "kept {articles} of articles, {low} of low-quality pages");
    assert!(dir.path().join("f1/scores.png").is_file() && dir.path().join("f1/stats.json").is_file());
    let scored = arg(&dir.path().join("scored.jsonl"));
    run_ok(&["clean", "quality", "score", "--model", &model, "--input", &raw, "--out", &scored]);
    let s = gptlab::jsonl::read_jsonl(Path::new(&scored)).unwrap();
    assert_eq!(s.len(), pages.len());
    assert!(s.iter().all(|r| (0.0..=1.0).contains(&r["quality_score"].as_f64().unwrap())));
    let err = run_err(&["clean", "quality", "filter", "--model", &raw, "--input", &raw, "--out", &model]);
    assert!(err.contains("model.json"), "{err}");
}

#[test]
fn decontamination_cuts_out_the_quoted_evaluation_documents() {
    let dir = tempfile::tempdir().unwrap();
    let pages = crawl(&dir.path().join("crawl"), 3000);
    let out = dir.path().join("decontaminated");
    let raw = dir.path().join("crawl/crawl.jsonl");
    let (raw, o) = (raw.to_str().unwrap(), out.to_str().unwrap());
    run_ok(&["clean", "decontaminate", "--input", raw, "--tasks", "review_sentiment", "--out", o]);
    let mut touched = std::collections::HashSet::new();
    let kept = gptlab::jsonl::read_jsonl(&out.join("kept.jsonl")).unwrap();
    for r in kept.iter().chain(&gptlab::jsonl::read_jsonl(&out.join("removed.jsonl")).unwrap()) {
        if r.get("contaminated_by").is_some() {
            assert_eq!(r["contaminated_by"], serde_json::json!(["review_sentiment"]));
            touched.insert(r["id"].as_str().unwrap().to_string());
        }
    }
    let planted: Vec<&str> =
        pages.iter().filter(|p| p["contaminated_from"].is_string()).map(|p| p["id"].as_str().unwrap()).collect();
    assert!(planted.len() >= 20, "{} contaminated pages planted", planted.len());
    // Every page cut is a planted one, and near copies aside (their edits may break every
    // 13-gram of a short quote) every planted one is cut.
    assert!(touched.iter().all(|t| planted.contains(&t.as_str())));
    let found = planted.iter().filter(|p| touched.contains(**p)).count();
    assert!(found as f64 >= 0.9 * planted.len() as f64, "{found} of {}", planted.len());
    // No piece still holds an evaluation 13-gram: decontaminating the output finds nothing.
    let again = dir.path().join("again");
    run_ok(&[
        "clean",
        "decontaminate",
        "--input",
        &format!("{o}/kept.jsonl"),
        "--tasks",
        "review_sentiment",
        "--out",
        again.to_str().unwrap(),
    ]);
    let stats: Value = serde_json::from_str(&std::fs::read_to_string(again.join("stats.json")).unwrap()).unwrap();
    assert_eq!((stats["cut"].as_u64(), stats["dropped"].as_u64()), (Some(0), Some(0)));
    let err = run_err(&["clean", "decontaminate", "--input", raw, "--tasks", "no_such_task", "--out", o]);
    assert!(err.contains("no_such_task"), "{err}");
}

#[test]
fn the_pipeline_chains_the_stages_and_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    crawl(&dir.path().join("crawl"), 2000);
    let out = dir.path().join("cleaned");
    let config = |sections: &str| {
        let path = dir.path().join("pipeline.toml");
        let text = format!(
            "input = \"{}\"\nout_dir = \"{}\"\n{sections}",
            dir.path().join("crawl/crawl.jsonl").display(),
            out.display()
        );
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let quality =
        format!("[quality]\npositives = \"{}\"\nalpha = 2.0\n", dir.path().join("crawl/curated.jsonl").display());
    let full = config(&format!("{quality}[dedup]\nthreshold = 0.8\n[decontaminate]\ntasks = [\"review_sentiment\"]\n"));
    let printed = run_ok(&["clean", "pipeline", "--config", &full]);
    assert!(printed.contains("report:"), "{printed}");
    let stats = |stage: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(stage).join("stats.json")).unwrap()).unwrap()
    };
    let lines = |stage: &str, f: &str| gptlab::jsonl::read_jsonl(&out.join(stage).join(f)).unwrap().len();
    assert_eq!(stats("1-quality")["documents"], 2000);
    // Each stage reads what the one before kept.
    assert_eq!(stats("2-dedup")["documents"].as_u64().unwrap() as usize, lines("1-quality", "kept.jsonl"));
    assert_eq!(stats("3-decontaminate")["documents"].as_u64().unwrap() as usize, lines("2-dedup", "kept.jsonl"));
    assert!(out.join("1-quality/model/model.safetensors").is_file() && out.join("pipeline.toml").is_file());
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains(&format!("| quality filter | 2000 | {} |", lines("1-quality", "kept.jsonl"))), "{report}");
    assert!(
        report.contains("| near-duplicate removal |") && report.contains("![quality scores](1-quality/scores.png)")
    );
    let err = run_err(&["clean", "pipeline", "--config", &config("")]);
    assert!(err.contains("no stage"), "{err}");
    let both = format!("{quality}model = \"x\"\n");
    let err = run_err(&["clean", "pipeline", "--config", &config(&both)]);
    assert!(err.contains("exactly one of model"), "{err}");
}
