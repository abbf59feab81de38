#!/usr/bin/env bash
# Data-parallel training on this machine: the text-micro GPT (60 steps at a global batch of 16
# windows) and the small CLIP (60 steps at a global batch of 32 pairs), each as one process with
# 1 and with 2 intra-op threads, and as 2 ranks of 1 thread each (`gptlab launch --nproc 2`),
# each three times, alternating. Prints the throughput (steps 20-60) and the final losses, which are
# equal across the three, and writes runs/data-parallel/results.md.
#   bash experiments/data-parallel/run.sh      (about 3 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
x=experiments/data-parallel
r=runs/data-parallel
g=${GPTLAB:-target/release/gptlab}
if [ -z "${GPTLAB:-}" ]; then
    bash scripts/setup.sh
    cargo build --release --quiet
fi
d=data/text-micro
[ -f $d/shards/meta.json ] || {
    $g data synth --out $d/corpus --config experiments/text-micro/synth.toml
    $g tokenizer train --corpus $d/corpus --vocab-size 1024 --out $d/tokenizer.json
    $g data tokenize --corpus $d/corpus --tokenizer $d/tokenizer.json --out $d/shards
}
rm -rf $r && mkdir -p $r
for round in 1 2 3; do
    for model in gpt clip; do
        if [ $model = gpt ]; then cmd=(train --config $x/config.toml); else cmd=(clip train --config $x/clip.toml); fi
        $g "${cmd[@]}" --threads 1 --out-dir $r/$model-one-thread-$round > /dev/null 2>&1
        $g "${cmd[@]}" --threads 2 --out-dir $r/$model-two-threads-$round > /dev/null 2>&1
        $g launch --nproc 2 -- "${cmd[@]}" --threads 1 --out-dir $r/$model-two-ranks-$round > /dev/null 2>&1
    done
done
.venv/bin/python - "$r" <<'PY' | tee $r/results.md
import json, statistics, sys
r = sys.argv[1]
rows = [("1 process, 1 thread", "one-thread"), ("1 process, 2 threads", "two-threads"), ("2 ranks (gptlab launch), 1 thread each", "two-ranks")]
for model, unit in [("gpt", "tokens"), ("clip", "pairs")]:
    def run(name):
        lines = [json.loads(l) for l in open(f"{r}/{model}-{name}/metrics.jsonl")]
        rate = statistics.mean(l[f"{unit}_per_s"] for l in lines if l["step"] > 20)
        return rate, lines[-1]["train_loss"], lines[-1]["val_loss"]
    base = statistics.median(run(f"one-thread-{i}")[0] for i in (1, 2, 3))
    print(f"\n{model.upper()}\n")
    print(f"| run | {unit}/s, median of 3 (range) | vs 1 process, 1 thread | final train loss | final val loss |")
    print("|---|---|---|---|---|")
    for label, name in rows:
        res = [run(f"{name}-{i}") for i in (1, 2, 3)]
        rates = [x[0] for x in res]
        rate = statistics.median(rates)
        spread = f"{min(rates):,.0f}–{max(rates):,.0f}"
        print(f"| {label} | {rate:,.0f} ({spread}) | {rate / base:.2f}x | {res[0][1]:.5f} | {res[0][2]:.5f} |")
PY
