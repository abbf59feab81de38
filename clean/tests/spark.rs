//! The Spark job (`clean/spark/dedup.py`, PySpark in local mode) gives byte for byte the result of
//! the single-machine command on the same shards, with and without verification, and reports bad
//! input as one line without writing anything.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const WORKER: &str = env!("CARGO_BIN_EXE_gptlab-clean");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn spark(input: &Path, out: &Path, extra: &[&str]) -> Output {
    let python = repo().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh", python.display());
    Command::new(python)
        .arg(repo().join("clean/spark/dedup.py"))
        .args(["--master", "local[2]", "--worker", WORKER, "--partitions", "2"])
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn single(input: &Path, out: &Path, extra: &[&str]) {
    let o =
        Command::new(WORKER).arg("dedup").arg("--input").arg(input).arg("--out").arg(out).args(extra).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Three shards in two folders: documents of random words, near copies with a few words changed,
/// exact copies (some across shards), and a shard whose records have no id (named path:line).
fn corpus(dir: &Path) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let words: Vec<String> = (0..400).map(|i| format!("w{i}")).collect();
    let mut docs: Vec<String> = Vec::new();
    for _ in 0..240 {
        let text: Vec<&str> = (0..rng.random_range(20..60)).map(|_| words[rng.random_range(0..400)].as_str()).collect();
        docs.push(text.join(" "));
        if rng.random_bool(0.3) {
            let mut copy = text.clone();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..copy.len());
                copy[at] = words[rng.random_range(0..400)].as_str();
            }
            docs.push(copy.join(" "));
        }
        if rng.random_bool(0.1) {
            docs.push(text.join(" "));
        }
    }
    let n = docs.len();
    let shard = |docs: &[String], id: bool, start: usize| -> String {
        docs.iter()
            .enumerate()
            .map(|(i, t)| {
                let rec = if id {
                    serde_json::json!({"id": format!("doc-{}", start + i), "text": t, "score": 0.5})
                } else {
                    serde_json::json!({"text": t})
                };
                // Blank lines count in line numbers but are not records.
                if i % 50 == 7 {
                    format!("\n{rec}")
                } else {
                    rec.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    };
    std::fs::create_dir_all(dir.join("b")).unwrap();
    std::fs::write(dir.join("a.jsonl"), shard(&docs[..n / 3], true, 0)).unwrap();
    std::fs::write(dir.join("b/c.jsonl"), shard(&docs[n / 3..2 * n / 3], false, 0)).unwrap();
    let mut last = docs[2 * n / 3..].to_vec();
    last.push(docs[5].clone());
    std::fs::write(dir.join("b/d.jsonl"), shard(&last, true, 1000)).unwrap();
}

fn stats(out: &Path) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
    let m = v.as_object_mut().unwrap();
    for timing_or_engine in ["seconds", "docs_per_s", "engine", "partitions"] {
        m.remove(timing_or_engine);
    }
    v
}

#[test]
fn the_spark_job_equals_the_single_machine_command() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("shards");
    corpus(&input);
    for extra in [&[][..], &["--verify", "--threshold", "0.7"][..]] {
        let (one, sp) = (dir.path().join("one"), dir.path().join("spark"));
        single(&input, &one, extra);
        let o = spark(&input, &sp, extra);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for f in ["kept.jsonl", "removed.jsonl"] {
            let (a, b) = (std::fs::read_to_string(one.join(f)).unwrap(), std::fs::read_to_string(sp.join(f)).unwrap());
            assert!(a == b, "{f} differs with {extra:?}:\n{a}\n---\n{b}");
        }
        let s = stats(&one);
        assert_eq!(s, stats(&sp), "{extra:?}");
        // The corpus has exact copies, near copies and id-less records among the removed.
        assert!(s["exact_duplicates"].as_u64().unwrap() > 5 && s["near_duplicates"].as_u64().unwrap() > 5, "{s}");
        assert!(std::fs::read_to_string(one.join("removed.jsonl")).unwrap().contains("c.jsonl:"));
        std::fs::remove_dir_all(&one).unwrap();
        std::fs::remove_dir_all(&sp).unwrap();
    }
}

#[test]
fn the_spark_job_names_a_malformed_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    std::fs::write(&input, "{\"text\": \"fine\"}\n\n{\"text\": \"broken\"\n{\"text\": 3}\n").unwrap();
    let out = dir.path().join("out");
    let o = spark(&input, &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.starts_with(&format!("error: {}:3: malformed JSON", input.display())), "{line}");
    assert!(!out.exists());
}
