"""Sets gptlab's and lm-eval's zero-shot results on the same tasks side by side: the headline
metric of each task, and the largest per-document difference of the log-likelihoods (every
choice of a multiple-choice document, the target of a loglikelihood document, the whole text
of a rolling one) and of the generations.

    python compare.py GPTLAB_EVAL_DIR LM_EVAL_OUTPUT_DIR
"""
import glob
import json
import os
import sys


def lm_eval_files(root):
    found = [os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.startswith("results_")]
    results = sorted(found)[-1]
    samples = {}
    for path in glob.glob(os.path.join(os.path.dirname(results), "samples_*.jsonl")):
        task = os.path.basename(path)[len("samples_"):].rsplit("_", 1)[0]
        samples[task] = [json.loads(line) for line in open(path)]
    return json.load(open(results)), samples


def lm_eval_lls(sample):
    """The log-likelihoods of one lm-eval sample, flattened: (ll, is_greedy) pairs for choices and
    targets, a bare number (written as a string) for a rolling document."""
    return [float(r[0]) if isinstance(r, (list, tuple)) else float(r) for r in sample["filtered_resps"]]


def main(ours_dir, theirs_dir):
    ours = json.load(open(os.path.join(ours_dir, "results.json")))
    theirs, their_samples = lm_eval_files(theirs_dir)
    print("| task | metric | gptlab | lm-eval | documents | max abs. log-likelihood difference | generations equal |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for task, metrics in ours["results"].items():
        mine = [json.loads(line) for line in open(find_samples(ours_dir, task))]
        theirs_task = their_samples[task]
        by_id = {s["doc_id"]: s for s in theirs_task}
        diffs, same_gen, n_gen = [], 0, 0
        for s in mine:
            t = by_id[s["doc_id"]]
            if "exact_match" in s["metrics"]:
                n_gen += 1
                same_gen += int(s["prediction"] == t["filtered_resps"][0])
                continue
            a = s["loglikelihoods"]
            b = lm_eval_lls(t)
            assert len(a) == len(b), (task, s["doc_id"], a, b)
            diffs += [abs(x - y) for x, y in zip(a, b)]
        metric = next(k for k in metrics if k.endswith(",none") and "_stderr" not in k)
        mine_v = metrics[metric]
        their_v = theirs["results"][task].get(metric)
        d = max(diffs) if diffs else float("nan")
        worst = max(worst, d) if diffs else worst
        gen = f"{same_gen}/{n_gen}" if n_gen else "-"
        print(f"| {task} | {metric.split(',')[0]} | {mine_v:.4f} | {their_v:.4f} | {len(mine)} | {d:.2e} | {gen} |")
    print()
    print(f"largest log-likelihood difference over all documents: {worst:.2e}")


def find_samples(ours_dir, task):
    hits = glob.glob(os.path.join(ours_dir, "*", "0shot", f"samples_{task}.jsonl"))
    assert len(hits) == 1, hits
    return hits[0]


if __name__ == "__main__":
    main(*sys.argv[1:3])
