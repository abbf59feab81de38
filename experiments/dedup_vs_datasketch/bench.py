"""gptlab's `clean dedup` (and the same code as the torch-free `gptlab-clean dedup`) against
datasketch and text-dedup on the same crawl, side by side in one run: for each seed, every tool's
documents per second (their stats.json, from the first record read to the last
written), the wall-clock time of the whole process, and precision and recall against the exact
Jaccard similarity (evaluate.py). Writes results.json and results.md into --out.

    python bench.py --gptlab target/release/gptlab --gptlab-clean target/release/gptlab-clean --crawl crawl.jsonl
        --out DIR [--text-dedup .peers/text-dedup] [--seeds 1,2,3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(cmd, env=None):
    # The previous tool's written pages go to disk first, so their writeback does not land on
    # this run.
    os.sync()
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gptlab", required=True)
    ap.add_argument("--gptlab-clean", required=True, help="the torch-free binary with the same dedup")
    ap.add_argument("--text-dedup", default=None, help="PYTHONPATH holding text-dedup 0.4.0 (skipped without it)")
    ap.add_argument("--crawl", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--threshold", type=float, default=0.8)
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    common = ["--threshold", str(a.threshold), "--num-perm", "128", "--ngram", "5"]
    tools = {
        "gptlab": lambda out, seed: [a.gptlab, "clean", "dedup", "--input", a.crawl, "--out", out, "--seed", str(seed)] + common,
        "gptlab-clean": lambda out, seed: [a.gptlab_clean, "dedup", "--input", a.crawl, "--out", out, "--seed", str(seed)] + common,
        "datasketch (legacy)": lambda out, seed: [sys.executable, os.path.join(HERE, "datasketch_dedup.py"), "--input", a.crawl,
                                                   "--out", out, "--scheme", "legacy", "--seed", str(seed)] + common,
        "datasketch (affine32)": lambda out, seed: [sys.executable, os.path.join(HERE, "datasketch_dedup.py"), "--input", a.crawl,
                                                     "--out", out, "--scheme", "affine32", "--seed", str(seed)] + common,
    }
    if a.text_dedup:
        tools["text-dedup (sha1)"] = lambda out, seed: [sys.executable, os.path.join(HERE, "textdedup_dedup.py"), "--input",
                                                        a.crawl, "--out", out, "--seed", str(seed)] + common
    runs = []
    names = list(tools)
    for n, seed in enumerate(seeds):
        # Each seed starts the round at the next tool, so no tool always runs in the same place
        # (first after another tool's heavy Python process, or right after gptlab's own run).
        for name in names[n % len(names):] + names[:n % len(names)]:
            cmd = tools[name]
            out = os.path.join(a.out, f"{name.split()[0]}{'-' + name.split('(')[1][:-1] if '(' in name else ''}-{seed}")
            env = dict(os.environ, PYTHONPATH=a.text_dedup) if name.startswith("text-dedup") else None
            wall = timed(cmd(out, seed), env)
            stats = json.load(open(os.path.join(out, "stats.json")))
            runs.append({"tool": name, "seed": seed, "out": out, "wall_s": wall, "docs_per_s": stats["docs_per_s"],
                         "removed": stats["removed"], "bands": stats["bands"], "rows": stats["rows"]})
            print(f"{name} seed {seed}: {stats['docs_per_s']:.0f} docs/s, {wall:.2f} s wall", flush=True)
    ev = subprocess.run([sys.executable, os.path.join(HERE, "evaluate.py"), "--crawl", a.crawl, "--threshold", str(a.threshold)]
                        + sum((["--out", r["out"]] for r in runs), []), check=True, capture_output=True, text=True)
    quality = json.loads(ev.stdout)
    for r in runs:
        r.update({k: quality[r["out"]][k] for k in ("precision", "recall", "true_duplicates")})
    summary = {}
    for name in tools:
        rs = [r for r in runs if r["tool"] == name]
        summary[name] = {k: statistics.mean(r[k] for r in rs) for k in ("docs_per_s", "wall_s", "precision", "recall")}
    base, light = summary["gptlab"], summary["gptlab-clean"]
    lines = ["| tool | docs/s (stats.json) | wall-clock s | gptlab's speed-up (docs/s) | (wall, gptlab) | (wall, gptlab-clean) "
             "| precision | recall |", "|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['docs_per_s']:.0f} | {s['wall_s']:.2f} | {base['docs_per_s'] / s['docs_per_s']:.1f}x | "
                     f"{s['wall_s'] / base['wall_s']:.1f}x | {s['wall_s'] / light['wall_s']:.1f}x | {s['precision']:.3f} | "
                     f"{s['recall']:.3f} |")
    table = "\n".join(lines)
    json.dump({"runs": runs, "summary": summary}, open(os.path.join(a.out, "results.json"), "w"), indent=2)
    open(os.path.join(a.out, "results.md"), "w").write(f"Means over seeds {a.seeds}.\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
