#!/usr/bin/env bash
# The whole test suite: set up if needed, then every test on CPU (arguments go to cargo test).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --release --workspace "$@"
