#!/usr/bin/env bash
# Train a small CLIP on the synthetic image world, then evaluate it:
#   run.sh [--scenes] [clip train args]
# config.toml (one object per scene, shape groups) by default; --scenes for config-scenes.toml
# (1-4 objects per scene).
set -euo pipefail
cd "$(dirname "$0")/../.."
config=experiments/clip_synthetic/config.toml
out=runs/clip_synthetic
if [[ "${1:-}" == "--scenes" ]]; then
    config=experiments/clip_synthetic/config-scenes.toml
    out=runs/clip_scenes
    shift
fi
bash scripts/setup.sh
cargo build --release --quiet
g=target/release/gptlab
$g clip train --config "$config" "$@"
$g clip eval --ckpt "$out/checkpoint" --out "$out/eval"
