"""The gauge-reading accuracy at each K averaged over the six scales (each scale a task), and
every visual question type at each K, from an evaluation's summary.jsonl; also the share of
gauge answers that are a value of the right scale (the scale identified, the needle aside).

    python summarize.py EVAL_DIR
"""
import collections
import glob
import json
import os
import sys

root = sys.argv[1]
rows = [json.loads(line) for line in open(os.path.join(root, "summary.jsonl"))]
ks = sorted({r["k"] for r in rows})
scale_values = {}
for path in glob.glob(os.path.join(root, "*", "0shot", "samples_gauge_reading_*.jsonl")):
    task = os.path.basename(path)[len("samples_"):-len(".jsonl")]
    # Every target of the task is a value of its scale; with enough documents, all of them.
    scale_values[task] = {json.loads(line)["target"] for line in open(path)}

print("| K | gauge reading, mean of 6 scales | answers on the right scale |")
print("|---|---|---|")
for k in ks:
    accs = [r["value"] for r in rows if r["task"].startswith("gauge_reading_") and r["k"] == k and r["metric"] == "exact_match"]
    on_scale, n = 0, 0
    for path in glob.glob(os.path.join(root, "*", f"{k}shot", "samples_gauge_reading_*.jsonl")):
        task = os.path.basename(path)[len("samples_"):-len(".jsonl")]
        for line in open(path):
            s = json.loads(line)
            n += 1
            on_scale += s["prediction"].strip() in scale_values[task]
    print(f"| {k} | {sum(accs) / len(accs):.3f} | {on_scale / max(n, 1):.3f} |")
print()
vqa = collections.defaultdict(dict)
for r in rows:
    if r["task"].startswith("vqa_") and r["metric"] == "exact_match":
        vqa[r["task"]][r["k"]] = (r["value"], r["stderr"])
print("| question type | " + " | ".join(f"K={k}" for k in ks) + " |")
print("|---|" + "---|" * len(ks))
for task, by_k in sorted(vqa.items()):
    cells = [f"{by_k[k][0]:.3f} ± {by_k[k][1]:.3f}" for k in ks]
    print(f"| {task} | " + " | ".join(cells) + " |")
