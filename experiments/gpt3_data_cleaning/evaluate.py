"""Scores each cleaning stage against the synthetic crawl's labels and prints a Markdown report.

- Quality: the classifier's precision and recall for articles (`high_quality`) at score 0.5 over
  the whole crawl; the Pareto filter's kept fraction, per page kind.
- Near duplicates: on the stage's own input, precision (each removal within Jaccard 0.8 of the
  page it names) and recall (planted pairs above 0.8 put in one cluster), as in
  experiments/dedup_vs_datasketch/evaluate.py; also on the whole crawl (runs/.../dedup-all).
- Decontamination: pages touched (cut or dropped) for review_sentiment against the pages
  labelled as quoting one of its test documents, on the stage's input and on the whole crawl
  (runs/.../decontaminate-all); scene_qa has no labels, so only its count is given.

    python evaluate.py --crawl crawl.jsonl --runs runs/gpt3_data_cleaning
"""

import argparse
import collections
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dedup_vs_datasketch"))
from evaluate import score  # noqa: E402  (the dedup benchmark's exact-Jaccard scorer)


def read(path):
    return [json.loads(l) for l in open(path) if l.strip()]


def ratio(a, b):
    return a / b if b else float("nan")


def dedup_scores(pages, stage_dir, threshold=0.8):
    present = {r["id"] for r in read(os.path.join(stage_dir, "kept.jsonl"))}
    removed = read(os.path.join(stage_dir, "removed.jsonl"))
    present |= {r["id"] for r in removed}
    s = score(pages, removed, threshold, present)
    return {"input": len(present), "removed": len(removed), "precision": s["precision"], "recall": s["recall"],
            "pairs": s["true_duplicates"]}


def decontamination_scores(pages, stage_dir):
    label = {p["id"]: (p.get("contaminated_from") or "") for p in pages}
    kept = read(os.path.join(stage_dir, "kept.jsonl"))
    removed = read(os.path.join(stage_dir, "removed.jsonl"))
    inputs = {r["id"] for r in kept} | {r["id"] for r in removed}
    touched = collections.defaultdict(set)
    for r in kept + removed:
        for task in r.get("contaminated_by") or []:
            touched[task].add(r["id"])
    quoted = {i for i in inputs if label[i].startswith("review_sentiment/")}
    hit = touched["review_sentiment"]
    return {"input": len(inputs), "dropped": len(removed), "labelled": len(quoted), "touched": len(hit),
            "precision": ratio(len(hit & quoted), len(hit)), "recall": ratio(len(hit & quoted), len(quoted)),
            "scene_qa": len(touched["scene_qa"])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crawl", required=True)
    ap.add_argument("--runs", required=True)
    a = ap.parse_args()
    pages = read(a.crawl)
    by_id = {p["id"]: p for p in pages}
    out = ["# GPT-3's data cleaning, scored against the crawl's labels", ""]

    scores = read(os.path.join(a.runs, "scores.jsonl"))
    good = [s["quality_score"] for s in scores if by_id[s["id"]]["high_quality"]]
    bad = [s["quality_score"] for s in scores if not by_id[s["id"]]["high_quality"]]
    tp, fp = sum(s >= 0.5 for s in good), sum(s >= 0.5 for s in bad)
    model = json.load(open(os.path.join(a.runs, "1-quality", "model", "model.json")))["report"]
    kept_ids = {r["id"] for r in read(os.path.join(a.runs, "1-quality", "kept.jsonl"))}
    kinds = collections.Counter(p["kind"] for p in pages)
    kept_kinds = collections.Counter(by_id[i]["kind"] for i in kept_ids)
    mean = lambda xs: sum(xs) / len(xs)
    out += ["## Quality classifier and Pareto filter (alpha 9)", "",
            f"- Over the whole crawl ({len(pages)} pages, {len(good)} articles): precision {ratio(tp, tp + fp):.3f}, "
            f"recall {ratio(tp, len(good)):.3f} for articles at score 0.5; mean score {mean(good):.3f} for articles, "
            f"{mean(bad):.3f} for the rest.",
            f"- Held-out tenth of its training data (model.json): accuracy {model['val_accuracy']:.3f}, precision "
            f"{model['val_precision']:.3f}, recall {model['val_recall']:.3f}.",
            f"- The Pareto rule kept {len(kept_ids)} of {len(pages)} pages ({len(kept_ids) / len(pages):.1%}); "
            f"its expectation from the scores, the mean of (2 - score)^-9, is "
            f"{mean([(2 - x['quality_score']) ** -9 for x in scores]):.1%} (articles: {mean([(2 - x) ** -9 for x in good]):.1%}).", "",
            "| kind | pages | kept | kept share |", "|---|---|---|---|"]
    for kind, n in sorted(kinds.items()):
        out.append(f"| {kind} | {n} | {kept_kinds[kind]} | {kept_kinds[kind] / n:.1%} |")

    out += ["", "## Near-duplicate removal (threshold 0.8, 128 permutations, word 5-grams)", "",
            "| input | pages in | removed | planted pairs >= 0.8 | precision | recall |", "|---|---|---|---|---|---|"]
    for name, d in [("after the quality filter (pipeline)", "2-dedup"), ("whole crawl", "dedup-all")]:
        s = dedup_scores(pages, os.path.join(a.runs, d))
        out.append(f"| {name} | {s['input']} | {s['removed']} ({s['removed'] / s['input']:.1%}) | {s['pairs']} | "
                   f"{s['precision']:.3f} | {s['recall']:.3f} |")

    out += ["", "## Decontamination (13-grams, 200-character windows)", "",
            "| input | records in | dropped whole | quoting review_sentiment (labelled) | touched for review_sentiment "
            "| precision | recall | touched for scene_qa |", "|---|---|---|---|---|---|---|---|"]
    for name, d in [("after dedup (pipeline)", "3-decontaminate"), ("whole crawl", "decontaminate-all")]:
        s = decontamination_scores(pages, os.path.join(a.runs, d))
        out.append(f"| {name} | {s['input']} | {s['dropped']} | {s['labelled']} | {s['touched']} | {s['precision']:.3f} | "
                   f"{s['recall']:.3f} | {s['scene_qa']} |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
