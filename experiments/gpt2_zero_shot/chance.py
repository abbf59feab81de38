"""Chance for each task of the experiment, on the documents scored: 1 / the number of choices for
multiple choice, and for the others the share of documents whose target is the most common one
(always guessing it). Reads the evaluation's samples.

    python chance.py EVAL_DIR
"""
import collections
import glob
import json
import os
import sys

root = sys.argv[1]
print("| task | chance |")
print("|---|---|")
seen = set()
for path in sorted(glob.glob(os.path.join(root, "*", "0shot", "samples_*.jsonl"))):
    task = os.path.basename(path)[len("samples_"):-len(".jsonl")]
    if task in seen:
        continue
    seen.add(task)
    rows = [json.loads(line) for line in open(path)]
    if rows[0].get("choices"):
        chance = sum(1 / len(r["choices"]) for r in rows) / len(rows)
    else:
        counts = collections.Counter(r["target"] for r in rows)
        chance = counts.most_common(1)[0][1] / len(rows)
    print(f"| {task} | {chance:.3f} |")
