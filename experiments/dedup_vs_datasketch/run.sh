#!/usr/bin/env bash
# gptlab's near-duplicate removal against datasketch 2.0.0 on the same 20,000-page synthetic
# crawl (planted exact and near duplicates), at threshold 0.8, 128 permutations, word 5-grams:
# documents per second, whole-process wall-clock time, precision and recall against the exact
# Jaccard similarity. Both run on the same machine, one after the other, three seeds each.
#   bash experiments/dedup_vs_datasketch/run.sh     (about 2 minutes on 2 CPU cores)
# datasketch (and its numpy/scipy) install into .peers/datasketch, outside the project's venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
x=experiments/dedup_vs_datasketch
r=runs/dedup_vs_datasketch
g=${GPTLAB:-target/release/gptlab}
if [ -z "${GPTLAB:-}" ]; then
    bash scripts/setup.sh
    cargo build --release --quiet
fi
[ -d .peers/datasketch/datasketch ] || .venv/bin/pip install --quiet --no-cache-dir --target .peers/datasketch datasketch==2.0.0
[ -f data/dedup_vs_datasketch/crawl.jsonl ] || $g data synth-crawl --out data/dedup_vs_datasketch --pages 20000
rm -rf $r && mkdir -p $r
PYTHONPATH=.peers/datasketch .venv/bin/python $x/bench.py --gptlab $g --crawl data/dedup_vs_datasketch/crawl.jsonl --out $r
