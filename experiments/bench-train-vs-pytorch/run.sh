#!/usr/bin/env bash
# Training throughput of gptlab against nanoGPT's own model.py on the same model, batch, precision
# and machine, measured side by side in alternating rounds; prints a table and the median ratio.
#   run.sh [PRESET] [BATCH] [STEPS] [DEVICE] [ROUNDS] [DTYPE]
#   run.sh micro 16 20 cpu 5 bf16
# nanoGPT is cloned (pinned) into the git-ignored .peers/nanoGPT; NANOGPT_GIT names another source
# (a local mirror) for machines without GitHub.
set -euo pipefail
cd "$(dirname "$0")/../.."
preset=${1:-micro}; batch=${2:-16}; steps=${3:-20}; device=${4:-cpu}; rounds=${5:-5}; dtype=${6:-fp32}
nanogpt=.peers/nanoGPT
pin=3adf61e154c3fe3fca428ad6bc3818b27a3b8291
if [ ! -f $nanogpt/model.py ]; then
    git clone -q "${NANOGPT_GIT:-https://github.com/karpathy/nanoGPT}" $nanogpt
    git -C $nanogpt checkout -q $pin
fi
bash scripts/setup.sh
cargo build --release --quiet
g=target/release/gptlab
py=.venv/bin/python
cfg=$($g info --preset "$preset" | $py -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["config"]))')
echo "$preset, batch $batch, $steps steps, $device, $dtype"
echo "| round | gptlab tokens/s | nanoGPT tokens/s | ratio |"
echo "|---|---|---|---|"
ratios=()
for r in $(seq "$rounds"); do
    ours=$($g bench train --preset "$preset" --batch-size "$batch" --steps "$steps" --device "$device" --dtype "$dtype" --peak-tflops 1 \
        | $py -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_s"])')
    peer=$($py experiments/bench-train-vs-pytorch/nanogpt_peer.py $nanogpt "$cfg" "$batch" "$steps" "$device" "$dtype" 2>/dev/null \
        | $py -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_s"])')
    ratio=$($py -c "print(f'{$ours/$peer:.3f}')")
    ratios+=("$ratio")
    echo "| $r | ${ours%.*} | ${peer%.*} | $ratio |"
done
$py -c "import statistics,sys; print(f'median ratio: {statistics.median(map(float, sys.argv[1:])):.2f}')" "${ratios[@]}"
