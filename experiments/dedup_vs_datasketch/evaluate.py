"""Precision and recall of a dedup output against the exact Jaccard similarity of word 5-grams,
on the labelled synthetic crawl.

A planted copy (exact or near) is a true duplicate when its similarity to the page it copies
reaches the threshold; recall is the share of those pairs the tool put in one cluster (one of
the two removed as a duplicate of the same page the other is, or is kept as), whichever page of
the pair it kept. A removal is right when the page
is within the threshold of the page it is named a duplicate of; precision is the share of those.

    python evaluate.py --crawl crawl.jsonl --out DIR [--out DIR ...] [--threshold 0.8]
"""

import argparse
import json
import os


def shingles(text, n=5):
    words = [w.lower() for w in text.split()]
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a, b):
    return len(a & b) / len(a | b) if a | b else 1.0


def score(pages, removed, threshold=0.8, present=None):
    """Precision and recall of `removed` (records with `id` and `duplicate_of`) on the labelled
    `pages`; planted pairs count only where both pages are in `present` (default: all)."""
    text = {p["id"]: p["text"] for p in pages}
    present = set(text) if present is None else present
    sets = {}

    def sim(x, y):
        for k in (x, y):
            if k not in sets:
                sets[k] = shingles(text[k])
        return jaccard(sets[x], sets[y])

    pairs = [(p["id"], p["copy_of"]) for p in pages
             if p.get("copy_of") and p["id"] in present and p["copy_of"] in present and sim(p["id"], p["copy_of"]) >= threshold]
    cluster = {r["id"]: r["duplicate_of"] for r in removed}  # a kept page is its own cluster
    found = sum(1 for c, o in pairs if cluster.get(c, c) == cluster.get(o, o))
    right = sum(1 for r in removed if sim(r["id"], r["duplicate_of"]) >= threshold)
    return {"removed": len(removed), "precision": right / max(len(removed), 1), "recall": found / max(len(pairs), 1),
            "true_duplicates": len(pairs)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crawl", required=True)
    ap.add_argument("--out", action="append", required=True)
    ap.add_argument("--threshold", type=float, default=0.8)
    a = ap.parse_args()
    pages = [json.loads(l) for l in open(a.crawl) if l.strip()]
    results = {}
    for out in a.out:
        removed = [json.loads(l) for l in open(os.path.join(out, "removed.jsonl")) if l.strip()]
        results[out] = score(pages, removed, a.threshold)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
