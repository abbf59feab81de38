#!/usr/bin/env bash
# GPT-3's data cleaning end to end on a labelled synthetic crawl: the quality classifier and
# Pareto filter, MinHash LSH near-duplicate removal and 13-gram decontamination, in GPT-3's
# order (`gptlab clean pipeline`), then each stage scored against the crawl's labels
# (evaluate.py): runs/gpt3_data_cleaning/report.md and evaluation.md.
#   bash experiments/gpt3_data_cleaning/run.sh      (about 1 minute on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
x=experiments/gpt3_data_cleaning
r=runs/gpt3_data_cleaning
d=data/gpt3_data_cleaning
g=${GPTLAB:-target/release/gptlab}
if [ -z "${GPTLAB:-}" ]; then
    bash scripts/setup.sh
    cargo build --release --quiet
fi
[ -f $d/crawl.jsonl ] || $g data synth-crawl --out $d --pages 20000
rm -rf $r
$g clean pipeline --config $x/pipeline.toml
# Each stage alone on the whole crawl, to score it on every labelled page: the pipeline's
# classifier over every page, dedup, and decontamination.
$g clean quality score --model $r/1-quality/model --input $d/crawl.jsonl --out $r/scores.jsonl
$g clean dedup --input $d/crawl.jsonl --out $r/dedup-all
$g clean decontaminate --input $d/crawl.jsonl --tasks review_sentiment,scene_qa --out $r/decontaminate-all
.venv/bin/python $x/evaluate.py --crawl $d/crawl.jsonl --runs $r | tee $r/evaluation.md
