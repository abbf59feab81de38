"""The peer: datasketch's MinHash + update_batch + MinHashLSH loop, doing what `gptlab clean
dedup` does on the same JSONL: word 5-gram shingles, exact duplicates by text, near duplicates
by LSH at the same threshold and permutations (datasketch chooses bands and rows with the same
rule), each document queried before it is inserted, clusters joined with union-find keeping the
first document in input order. Writes kept.jsonl, removed.jsonl and stats.json like gptlab,
with docs_per_s measured from the first record read to the last written.

    python datasketch_dedup.py --input crawl.jsonl --out DIR [--scheme legacy|affine32] [--seed 1]
"""

import argparse
import json
import os
import time

from datasketch import MinHash, MinHashLSH


def shingles(text, n):
    words = [w.lower() for w in text.split()]
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--scheme", default="legacy", choices=["legacy", "affine32", "affine64"])
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    start = time.perf_counter()
    raws, docs = [], []
    with open(a.input) as f:
        for line in f:
            if line.strip():
                raws.append(line.rstrip("\n"))
                docs.append(json.loads(line))
    parent = list(range(len(docs)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(x, y):
        rx, ry = find(x), find(y)
        parent[max(rx, ry)] = min(rx, ry)

    lsh = MinHashLSH(threshold=a.threshold, num_perm=a.num_perm)
    first_of = {}
    for i, d in enumerate(docs):
        text = d["text"]
        if text in first_of:
            union(first_of[text], i)
            continue
        first_of[text] = i
        m = MinHash(num_perm=a.num_perm, seed=a.seed, scheme=a.scheme)
        m.update_batch([s.encode("utf8") for s in shingles(text, a.ngram)])
        for j in lsh.query(m):
            union(j, i)
        lsh.insert(i, m)
    roots = [find(i) for i in range(len(docs))]
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "kept.jsonl"), "w") as kept, open(os.path.join(a.out, "removed.jsonl"), "w") as removed:
        for i, d in enumerate(docs):
            if roots[i] == i:
                kept.write(raws[i] + "\n")
            else:
                d["duplicate_of"] = docs[roots[i]]["id"]
                removed.write(json.dumps(d) + "\n")
    seconds = time.perf_counter() - start
    n_kept = sum(1 for i, r in enumerate(roots) if r == i)
    b, r = lsh.b, lsh.r
    stats = {
        "documents": len(docs),
        "kept": n_kept,
        "removed": len(docs) - n_kept,
        "bands": b,
        "rows": r,
        "scheme": a.scheme,
        "seconds": seconds,
        "docs_per_s": len(docs) / seconds,
    }
    with open(os.path.join(a.out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=2)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
