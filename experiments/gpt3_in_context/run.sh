#!/usr/bin/env bash
# GPT-3's in-context learning curves in miniature: three GPT sizes trained on the same 4.9M tokens
# of the synthetic corpus with a 512-token context, then scored by the harness on held-out
# in-context tasks at K = 0, 1, 2, 4, 8, 16, 32 examples.
#   bash experiments/gpt3_in_context/run.sh     (about 25 minutes on 2 CPU cores)
# Checkpoints that exist are reused; delete runs/gpt3_in_context to train again.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh
cargo build --release --quiet
g=target/release/gptlab
x=experiments/gpt3_in_context
r=runs/gpt3_in_context
d=data/gpt3_in_context
start=$(date +%s)
stamp() { echo "[gpt3_in_context] $1 at $(( $(date +%s) - start )) s"; }
[ -f $d/shards/meta.json ] || {
    $g data synth --out $d/corpus --config $x/synth.toml
    $g tokenizer train --corpus $d/corpus --vocab-size 1024 --out $d/tokenizer.json
    $g data tokenize --corpus $d/corpus --tokenizer $d/tokenizer.json --out $d/shards
}
stamp "data ready"
for size in small medium large; do
    [ -d $r/$size/checkpoint ] || $g train --config $x/$size.toml
    stamp "$size trained"
done
tasks=word_map,linear_map,reversed_words,cycle_letters,anagrams1,arithmetic_2da,arithmetic_2ds,arithmetic_3da
$g eval --ckpt $r/small/checkpoint --ckpt $r/medium/checkpoint --ckpt $r/large/checkpoint \
    --tasks $tasks --shots 0,1,2,4,8,16,32 --limit 100 --out $r/eval
stamp "evaluated"
for t in word_map linear_map reversed_words arithmetic_2da; do cp $r/eval/k_$t.png $x/; done
