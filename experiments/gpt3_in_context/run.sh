#!/usr/bin/env bash
# GPT-3's in-context learning curves in miniature: three GPT sizes trained on the same tokens of
# the synthetic corpus with a 512-token context, then scored by the harness on held-out
# in-context tasks at K = 0, 1, 2, 4, 8, 16, 32 examples.
#   bash experiments/gpt3_in_context/run.sh          (CPU: 0.2M, 1M, 3M parameters on 4.9M tokens;
#                                                     about 25 minutes on 2 cores)
#   bash experiments/gpt3_in_context/run.sh --gpu    (one CUDA GPU: 3.6M, 26M, 86M parameters on
#                                                     33M tokens, bf16; about 4 minutes on an H200)
# Checkpoints that exist are reused; delete runs/gpt3_in_context[-gpu] to train again. Where Rust
# is missing (a GPU machine), give a built binary: GPTLAB=path/to/gptlab.
set -euo pipefail
cd "$(dirname "$0")/../.."
x=experiments/gpt3_in_context
variant= prefix=
if [[ "${1:-}" == "--gpu" ]]; then variant=-gpu prefix=gpu-; fi
r=runs/gpt3_in_context$variant
d=data/gpt3_in_context$variant
g=${GPTLAB:-target/release/gptlab}
if [ -z "${GPTLAB:-}" ]; then
    bash scripts/setup.sh
    cargo build --release --quiet
fi
start=$(date +%s)
stamp() { echo "[gpt3_in_context$variant] $1 at $(( $(date +%s) - start )) s"; }
[ -f $d/shards/meta.json ] || {
    $g data synth --out $d/corpus --config $x/synth$variant.toml
    $g tokenizer train --corpus $d/corpus --vocab-size 1024 --out $d/tokenizer.json
    $g data tokenize --corpus $d/corpus --tokenizer $d/tokenizer.json --out $d/shards
}
stamp "data ready"
for size in small medium large; do
    [ -d $r/$size/checkpoint ] || $g train --config $x/$prefix$size.toml
    stamp "$size trained"
done
tasks=word_map,linear_map,reversed_words,cycle_letters,anagrams1,arithmetic_2da,arithmetic_2ds,arithmetic_3da
$g eval --ckpt $r/small/checkpoint --ckpt $r/medium/checkpoint --ckpt $r/large/checkpoint \
    --tasks $tasks --shots 0,1,2,4,8,16,32 --limit 100 --out $r/eval
stamp "evaluated"
