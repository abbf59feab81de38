#!/usr/bin/env bash
# GPT-3's data cleaning end to end on labelled synthetic crawls: the quality classifier and
# Pareto filter, MinHash LSH near-duplicate removal and 13-gram decontamination, in GPT-3's
# order (`gptlab clean pipeline`), then each stage scored against the crawl's labels
# (evaluate.py), on two crawls of 20,000 pages:
#   the default crawl (30% of original pages low quality)  -> runs/gpt3_data_cleaning
#   a Common-Crawl-shaped one (90% low quality)              -> runs/gpt3_data_cleaning_cc
# Each run folder gets report.md (the pipeline's) and evaluation.md (the scores).
#   bash experiments/gpt3_data_cleaning/run.sh      (about 1.5 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
x=experiments/gpt3_data_cleaning
g=${GPTLAB:-target/release/gptlab}
if [ -z "${GPTLAB:-}" ]; then
    bash scripts/setup.sh
    cargo build --release --quiet
fi
clean() {  # data folder, run folder, pipeline config, synth-crawl arguments...
    local d=$1 r=$2 cfg=$3
    shift 3
    [ -f "$d/crawl.jsonl" ] || $g data synth-crawl --out "$d" "$@"
    rm -rf "$r"
    $g clean pipeline --config "$cfg"
    # Each stage alone on the whole crawl, to score it on every labelled page: the pipeline's
    # classifier over every page, dedup, and decontamination.
    $g clean quality score --model "$r/1-quality/model" --input "$d/crawl.jsonl" --out "$r/scores.jsonl"
    $g clean dedup --input "$d/crawl.jsonl" --out "$r/dedup-all"
    $g clean decontaminate --input "$d/crawl.jsonl" --tasks review_sentiment,scene_qa --out "$r/decontaminate-all"
    .venv/bin/python $x/evaluate.py --crawl "$d/crawl.jsonl" --runs "$r" | tee "$r/evaluation.md"
}
clean data/gpt3_data_cleaning runs/gpt3_data_cleaning $x/pipeline.toml --pages 20000
clean data/gpt3_data_cleaning_cc runs/gpt3_data_cleaning_cc $x/pipeline_cc.toml --config $x/crawl_cc.toml
