#!/usr/bin/env bash
# GPT-2's zero-shot transfer in miniature: tasks named in natural language with no example,
# beside the same tasks with K examples and beside chance, on the three models of
# experiments/gpt3_in_context (trained there first if missing). No model trains on these tasks:
# the words and operand pairs scored are held out of the corpus.
#   bash experiments/gpt2_zero_shot/run.sh          (CPU models; about 80 s once they exist)
#   bash experiments/gpt2_zero_shot/run.sh --gpu    (the GPU models; GPTLAB=binary where Rust is missing)
set -euo pipefail
cd "$(dirname "$0")/../.."
variant=
if [[ "${1:-}" == "--gpu" ]]; then variant=-gpu; fi
r=runs/gpt3_in_context$variant
[ -d $r/large/checkpoint ] || bash experiments/gpt3_in_context/run.sh ${1:-}
g=${GPTLAB:-target/release/gptlab}
[ -n "${GPTLAB:-}" ] || cargo build --release --quiet
x=experiments/gpt2_zero_shot
out=runs/gpt2_zero_shot$variant
rm -rf $out/tasks && mkdir -p $out
$g eval --write-tasks $out/tasks --tasks reversed_words,arithmetic_2da
cp $x/tasks/*.yaml $out/tasks/
tasks=$out/tasks/reverse_instruct.yaml,$out/tasks/uppercase_instruct.yaml,$out/tasks/arithmetic_2da_instruct.yaml
tasks=$tasks,arithmetic_2da,scene_count,scene_count_mc,arithmetic_2da_mc,lambada_scene
$g eval --ckpt $r/small/checkpoint --ckpt $r/medium/checkpoint --ckpt $r/large/checkpoint \
    --tasks $tasks --shots 0,1,4 --limit 200 --out $out/eval
python3 $x/chance.py $out/eval | tee $out/chance.md
