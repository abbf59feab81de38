#!/usr/bin/env bash
# The chain-of-thought probe of "Sparks of AGI" in miniature: two GPT sizes trained on the same
# arithmetic tokens answer held-out additions of 2 to 5 digits directly ("Q: What is a plus b?
# A:") and with the scratchpad the corpus teaches ("Add a + b digit by digit, from the right:",
# answer read from "So a + b = c"). The report puts accuracy against the number of steps (digit
# columns) for each size and form: runs/sparks_cot/eval/report.md.
#   bash experiments/sparks_cot/run.sh      (about 10.5 minutes on 2 CPU cores)
# Checkpoints that exist are reused; delete runs/sparks_cot to train again.
set -euo pipefail
cd "$(dirname "$0")/../.."
x=experiments/sparks_cot
r=runs/sparks_cot
d=data/sparks_cot
g=${GPTLAB:-target/release/gptlab}
if [ -z "${GPTLAB:-}" ]; then
    bash scripts/setup.sh
    cargo build --release --quiet
fi
start=$(date +%s)
stamp() { echo "[sparks_cot] $1 at $(( $(date +%s) - start )) s"; }
[ -f $d/shards/meta.json ] || {
    $g data synth --out $d/corpus --config $x/synth.toml
    $g tokenizer train --corpus $d/corpus --vocab-size 320 --out $d/tokenizer.json
    $g data tokenize --corpus $d/corpus --tokenizer $d/tokenizer.json --out $d/shards
}
stamp "data ready"
for size in small large; do
    [ -d $r/$size/checkpoint ] || $g train --config $x/$size.toml
    stamp "$size trained"
done
tasks=arithmetic_2da,arithmetic_3da,arithmetic_4da,arithmetic_5da
$g eval --ckpt $r/small/checkpoint --ckpt $r/large/checkpoint \
    --tasks $tasks,${tasks//da/da_cot} --shots 0 --limit 200 --out $r/eval
stamp "evaluated"
