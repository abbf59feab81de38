#!/usr/bin/env bash
# GPT-4's predictable scaling at small scale: train a sweep, fit it and register the predicted
# loss of a 10x larger target in prediction.json, then train the target and check.
# Usage: run.sh [--small | --gpu | --capability]   (extra arguments go to every `scaling sweep`, e.g. --jobs 2)
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh
cargo build --release --quiet
case "${1:-}" in
  --small) suffix=-small; shift ;;
  --gpu) suffix=-gpu; shift ;;
  --capability) suffix=-capability; shift ;;
  *) suffix= ;;
esac
here=experiments/gpt4_predictable_scaling
out=runs/gpt4_predictable_scaling$suffix
g=target/release/gptlab
$g scaling sweep --config "$here/sweep$suffix.toml" --out "$out/sweep" "$@"
# The prediction is registered once, before the target starts; a rerun keeps the first one.
if [ ! -f "$out/prediction/prediction.json" ]; then
  $g scaling predict --runs "$out/sweep" --target "$here/target$suffix.toml" --out "$out/prediction"
fi
$g scaling sweep --config "$here/target$suffix.toml" --out "$out/target" "$@"
$g scaling check --prediction "$out/prediction/prediction.json" --runs "$out/target"
echo "report: $out/prediction/outcome.md"
