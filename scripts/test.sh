#!/usr/bin/env bash
# The whole test suite: set up if needed, then every test on CPU (arguments go to cargo test).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The Spark dedup job's test runs PySpark in local mode, which needs a Java runtime (17+).
if ! command -v java >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "[setup] installing a Java runtime for PySpark" >&2
        apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null
    else
        echo "error: java is required for the Spark tests (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)" >&2
        exit 1
    fi
fi
cargo test --release --workspace "$@"
