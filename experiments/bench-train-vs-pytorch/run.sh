#!/usr/bin/env bash
# Training throughput of gptlab against PyTorch on the same model, batch and machine, measured
# side by side, alternating runs. Usage: run.sh [PRESET] [BATCH] [STEPS] [DEVICE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
preset=${1:-micro}; batch=${2:-16}; steps=${3:-20}; device=${4:-cpu}; rounds=${5:-3}
bash scripts/setup.sh
cargo build --release --quiet
g=target/release/gptlab
py=.venv/bin/python
cfg=$($g info --preset "$preset" | $py -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["config"]))')
echo "| round | gptlab tokens/s | PyTorch tokens/s | ratio |"
echo "|---|---|---|---|"
for r in $(seq "$rounds"); do
    ours=$($g bench train --preset "$preset" --batch-size "$batch" --steps "$steps" --device "$device" --dtype fp32 --peak-tflops 1 \
        | $py -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_s"])')
    peer=$($py experiments/bench-train-vs-pytorch/peer.py "$cfg" "$batch" "$steps" "$device" \
        | $py -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_s"])')
    $py -c "print(f'| $r | {$ours:.0f} | {$peer:.0f} | {$ours/$peer:.2f} |')"
done
