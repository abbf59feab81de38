#!/usr/bin/env bash
# Train the small CLIP of config.toml on the synthetic image world, then evaluate it.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh
cargo build --release --quiet
g=target/release/gptlab
$g clip train --config experiments/clip_synthetic/config.toml "$@"
$g clip eval --ckpt runs/clip_synthetic/checkpoint --out runs/clip_synthetic/eval
