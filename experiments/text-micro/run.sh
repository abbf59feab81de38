#!/usr/bin/env bash
# Synthesise the corpus, train a tokenizer, tokenize, and train the micro GPT of config.toml.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh
cargo build --release --quiet
g=target/release/gptlab
d=data/text-micro
[ -f $d/shards/meta.json ] || {
    $g data synth --out $d/corpus --config experiments/text-micro/synth.toml
    $g tokenizer train --corpus $d/corpus --vocab-size 1024 --out $d/tokenizer.json
    $g data tokenize --corpus $d/corpus --tokenizer $d/tokenizer.json --out $d/shards
}
$g train --config experiments/text-micro/config.toml "$@"
$g sample --ckpt runs/text-micro/checkpoint --prompt "Q: What is 23 plus 58? A:" --temperature 0 --stop $'\n'
