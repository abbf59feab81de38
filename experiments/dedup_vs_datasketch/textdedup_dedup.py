"""The second peer: text-dedup 0.4.0's MinHash command (`python -m text_dedup.minhash`, Hugging
Face datasets in and out, its own LSH and union-find) on the same JSONL, at the same threshold,
permutations and n-gram size, with its datasketch-rule bands and rows; sha1 hashes (its default),
--min_length 0 so no page is dropped for being short, two processes (one per core). text-dedup
splits words on every non-word character where gptlab and datasketch split on whitespace.

Its union-find (dumped with --debug) names each removed page's cluster root (union by rank, so
not always the cluster's first page, as it is in gptlab; text-dedup keeps the root); this script writes kept.jsonl, removed.jsonl (with duplicate_of) and
stats.json like gptlab, docs_per_s from text-dedup's own "Total" timer (loading to saving).

    python textdedup_dedup.py --input crawl.jsonl --out DIR [--seed 1]
"""

import argparse
import json
import os
import pickle
import re
import shutil
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    work = os.path.join(a.out, "text-dedup")
    cmd = [sys.executable, "-m", "text_dedup.minhash", "--path", "json", "--data_files", os.path.abspath(a.input),
           "--split", "train", "--cache_dir", os.path.join(work, "cache"), "--output", os.path.join(work, "output"),
           "--column", "text", "--num_perm", str(a.num_perm), "--threshold", str(a.threshold),
           "--ngram", str(a.ngram), "--min_length", "0", "--seed", str(a.seed), "--num_proc", "2", "--debug"]
    records = [json.loads(l) for l in open(a.input) if l.strip()]
    # A wide console, so rich's log lines do not wrap the timer values (a 10 s total would).
    log = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, COLUMNS="200"))
    if log.returncode != 0:
        sys.exit(f"text-dedup failed:\n{log.stderr[-3000:]}")
    from text_dedup.utils import optimal_param  # the bands and rows text-dedup chose (it does not log them)

    bands, rows = optimal_param(a.threshold, a.num_perm, false_positive_weight=0.5, false_negative_weight=0.5)
    total = re.search(r"Total\s*:\s*([0-9.]+)s", log.stdout + log.stderr)
    uf = pickle.load(open(os.path.join(work, "output", "uf.pkl"), "rb"))
    roots = [uf.find(i) if i in uf.parent else i for i in range(len(records))]
    kept = [r for i, r in enumerate(records) if roots[i] == i]
    removed = [dict(r, duplicate_of=records[roots[i]]["id"]) for i, r in enumerate(records) if roots[i] != i]
    with open(os.path.join(a.out, "kept.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
    with open(os.path.join(a.out, "removed.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in removed)
    if not total:
        sys.exit("text-dedup logged no Total time")
    seconds = float(total.group(1))
    stats = {"documents": len(records), "kept": len(kept), "removed": len(removed), "seconds": seconds,
             "docs_per_s": len(records) / seconds, "bands": bands, "rows": rows, "threshold": a.threshold, "num_perm": a.num_perm, "ngram": a.ngram}
    json.dump(stats, open(os.path.join(a.out, "stats.json"), "w"), indent=2)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
