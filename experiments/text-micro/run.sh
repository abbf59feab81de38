#!/usr/bin/env bash
# Synthesise the corpus, train a tokenizer, tokenize, and train the micro GPT of config.toml.
#   run.sh [--bf16] [train args]    (--bf16: the same run in bf16 into runs/text-micro-bf16)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=runs/text-micro
extra=()
if [[ "${1:-}" == "--bf16" ]]; then
    out=runs/text-micro-bf16
    extra=(--dtype bf16 --out-dir "$out")
    shift
fi
bash scripts/setup.sh
cargo build --release --quiet
g=target/release/gptlab
d=data/text-micro
[ -f $d/shards/meta.json ] || {
    $g data synth --out $d/corpus --config experiments/text-micro/synth.toml
    $g tokenizer train --corpus $d/corpus --vocab-size 1024 --out $d/tokenizer.json
    $g data tokenize --corpus $d/corpus --tokenizer $d/tokenizer.json --out $d/shards
}
$g train --config experiments/text-micro/config.toml "${extra[@]}" "$@"
$g sample --ckpt $out/checkpoint --prompt "Q: What is 23 plus 58? A:" --temperature 0 --stop $'\n'
