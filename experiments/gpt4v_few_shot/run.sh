#!/usr/bin/env bash
# The seed's GPT-4V section in miniature, through the evaluation harness: the VLM of
# experiments/gpt4v_interleaved (trained there first if missing) reads unlabelled gauges with
# K = 0, 1, 2, 4 worked examples in the prompt (one task per scale, the episodes' own format),
# and answers each visual question type with K earlier question-answer turns.
#   bash experiments/gpt4v_few_shot/run.sh     (about 3 minutes once the VLM exists)
set -euo pipefail
cd "$(dirname "$0")/../.."
ckpt=runs/gpt4v_interleaved/instruct/checkpoint
[ -d $ckpt ] || bash experiments/gpt4v_interleaved/run.sh
cargo build --release --quiet
g=target/release/gptlab
out=runs/gpt4v_few_shot
gauges=gauge_reading_1,gauge_reading_2,gauge_reading_3,gauge_reading_4,gauge_reading_5,gauge_reading_6
vqa=vqa_count,vqa_colour,vqa_shape,vqa_position,vqa_relation,vqa_gauge,vqa_pointing
$g eval --ckpt $ckpt --tasks $gauges,$vqa --shots 0,1,2,4 --limit 100 --out $out
.venv/bin/python experiments/gpt4v_few_shot/summarize.py $out | tee $out/summary.md
