#!/usr/bin/env bash
# The main job: set up if needed, build, and run `gptlab quickstart` (arguments pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --quiet
exec target/release/gptlab quickstart "$@"
