#!/usr/bin/env bash
# GPT-4V's interleaved input at CPU scale: a small CLIP and a micro GPT (trained here, or reused
# when their checkpoints exist), the synthetic multimodal data, LLaVA's two stages, evaluation.
#   bash experiments/gpt4v_interleaved/run.sh        (16 to 21 minutes on 2 CPU cores, as fast as the VM runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh
cargo build --release --quiet
g=target/release/gptlab
x=experiments/gpt4v_interleaved
r=runs/gpt4v_interleaved
t=data/text-micro
start=$(date +%s)
stamp() { echo "[gpt4v_interleaved] $1 at $(( $(date +%s) - start )) s"; }
[ -f $t/shards/meta.json ] || {
    $g data synth --out $t/corpus --config experiments/text-micro/synth.toml
    $g tokenizer train --corpus $t/corpus --vocab-size 1024 --out $t/tokenizer.json
    $g data tokenize --corpus $t/corpus --tokenizer $t/tokenizer.json --out $t/shards
}
[ -d $r/gpt/checkpoint ] || $g train --config $x/gpt.toml
stamp "GPT ready"
[ -d $r/clip/checkpoint ] || $g clip train --config $x/clip.toml
stamp "CLIP ready"
[ -f data/gpt4v_interleaved/eval.jsonl ] || $g data synth-vlm --out data/gpt4v_interleaved --config $x/synth_vlm.toml
rm -rf $r/align $r/instruct
$g vlm train --config $x/align.toml
stamp "align done"
$g vlm train --config $x/instruct.toml
stamp "instruct done"
$g vlm eval --ckpt $r/instruct/checkpoint --out $r/eval --data data/gpt4v_interleaved/eval.jsonl
stamp "evaluated"
img=data/gpt4v_interleaved/images/eval/000001.png
$g vlm ask --ckpt $r/instruct/checkpoint --image $img "What colour is the small circle?"
