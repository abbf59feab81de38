#!/usr/bin/env bash
# gptlab's near-duplicate removal against datasketch 2.0.0 and text-dedup 0.4.0 on the same
# 20,000-page synthetic crawl (planted exact and near duplicates), at threshold 0.8, 128
# permutations, word 5-grams: documents per second, whole-process wall-clock time, precision and
# recall against the exact Jaccard similarity. All run on the same machine, one after the other,
# five seeds each. Then the Spark job (local[2]) on the same crawl, checked equal to gptlab's.
#   bash experiments/dedup_vs_datasketch/run.sh     (about 5 minutes on 2 CPU cores)
# The peers install into .peers/ (outside the project's venv): datasketch with numpy/scipy, and
# text-dedup with Hugging Face datasets (about 1.3 GB).
set -euo pipefail
cd "$(dirname "$0")/../.."
x=experiments/dedup_vs_datasketch
r=runs/dedup_vs_datasketch
g=${GPTLAB:-target/release/gptlab}
gc=$(dirname "$g")/gptlab-clean
if [ -z "${GPTLAB:-}" ]; then
    bash scripts/setup.sh
    cargo build --release --quiet --workspace --bins
fi
[ -d .peers/datasketch/datasketch ] || .venv/bin/pip install --quiet --no-cache-dir --target .peers/datasketch datasketch==2.0.0
[ -d .peers/text-dedup/text_dedup ] || .venv/bin/pip install --quiet --no-cache-dir --target .peers/text-dedup text-dedup==0.4.0
[ -f data/dedup_vs_datasketch/crawl.jsonl ] || $g data synth-crawl --out data/dedup_vs_datasketch --pages 20000
rm -rf $r && mkdir -p $r
PYTHONPATH=.peers/datasketch .venv/bin/python $x/bench.py --gptlab $g --gptlab-clean "$gc" \
    --text-dedup .peers/text-dedup --crawl data/dedup_vs_datasketch/crawl.jsonl --out $r --seeds 1,2,3,4,5
start=$(date +%s%N)
.venv/bin/python clean/spark/dedup.py --master 'local[2]' --worker "$gc" \
    --input data/dedup_vs_datasketch/crawl.jsonl --out $r/spark 2>/dev/null
echo "spark local[2]: $(( ($(date +%s%N) - start) / 1000000 )) ms wall" | tee $r/spark/wall.txt
cmp $r/spark/kept.jsonl $r/gptlab-1/kept.jsonl && cmp $r/spark/removed.jsonl $r/gptlab-1/removed.jsonl \
    && echo "spark output equals gptlab clean dedup's (seed 1)" | tee -a $r/spark/wall.txt
