#!/usr/bin/env bash
# CLIP training throughput of gptlab against HF transformers' CLIPModel at the `small` preset's
# shape, same batch, caption length, precision and machine, in alternating rounds.
#   run_clip.sh [BATCH] [TEXT_LEN] [STEPS] [DEVICE] [ROUNDS] [DTYPE]
#   run_clip.sh 32 20 10 cpu 5 fp32
set -euo pipefail
cd "$(dirname "$0")/../.."
batch=${1:-32}; text_len=${2:-20}; steps=${3:-10}; device=${4:-cpu}; rounds=${5:-5}; dtype=${6:-fp32}
bash scripts/setup.sh
cargo build --release --quiet
g=target/release/gptlab
py=.venv/bin/python
echo "CLIP small, batch $batch, captions of $text_len tokens, $steps steps, $device, $dtype"
echo "| round | gptlab pairs/s | HF CLIPModel pairs/s | ratio |"
echo "|---|---|---|---|"
ratios=()
for r in $(seq "$rounds"); do
    ours=$($g bench clip-train --preset small --batch-size "$batch" --text-len "$text_len" --steps "$steps" --device "$device" --dtype "$dtype" \
        | $py -c 'import json,sys; print(json.load(sys.stdin)["pairs_per_s"])')
    peer=$($py experiments/bench-train-vs-pytorch/hf_clip_peer.py "$batch" "$text_len" "$steps" "$device" "$dtype" 2>/dev/null \
        | $py -c 'import json,sys; print(json.load(sys.stdin)["pairs_per_s"])')
    ratio=$($py -c "print(f'{$ours/$peer:.3f}')")
    ratios+=("$ratio")
    echo "| $r | ${ours%.*} | ${peer%.*} | $ratio |"
done
$py -c "import statistics,sys; print(f'median ratio: {statistics.median(map(float, sys.argv[1:])):.2f}')" "${ratios[@]}"
