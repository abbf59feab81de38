#!/usr/bin/env bash
# The GPT series' three paradigms on the same four labelled tasks of the embedded world:
#   (1) GPT-1: a model fine-tuned per task on 10, 100 and 1000 labelled records (and at 1000
#       without the auxiliary LM loss, GPT-1's ablation);
#   (2) one multitask model that knows the task from a token;
#   (3) GPT-2/3: the pretrained model prompted in natural language with K = 0, 1, 4, 8 examples.
# Then one table and one plot (runs/three_paradigms/report/paradigms.md).
#   bash experiments/three_paradigms/run.sh      (about 12 minutes on 2 CPU cores)
# Checkpoints that exist are reused; delete runs/three_paradigms to run again.
set -euo pipefail
cd "$(dirname "$0")/../.."
x=experiments/three_paradigms
r=runs/three_paradigms
d=data/text-micro
g=${GPTLAB:-target/release/gptlab}
if [ -z "${GPTLAB:-}" ]; then
    bash scripts/setup.sh
    cargo build --release --quiet
fi
start=$(date +%s)
stamp() { echo "[three_paradigms] $1 at $(( $(date +%s) - start )) s"; }
[ -f $d/shards/meta.json ] || {
    $g data synth --out $d/corpus --config experiments/text-micro/synth.toml
    $g tokenizer train --corpus $d/corpus --vocab-size 1024 --out $d/tokenizer.json
    $g data tokenize --corpus $d/corpus --tokenizer $d/tokenizer.json --out $d/shards
}
[ -d $r/pretrained/checkpoint ] || $g train --config $x/pretrain.toml
stamp "pretrained"
tasks="scene_entailment review_sentiment scene_paraphrase scene_qa"
mkdir -p $r/configs
finetune() { # task, records, lm_coef, name
    local cfg=$r/configs/$4.toml
    sed -e "s|finetuned/scene_entailment-1000|finetuned/$4|" -e "s|^name = .*|name = \"$1\"|" \
        -e "s|^train_examples = .*|train_examples = $2|" -e "s|^lm_coef = .*|lm_coef = $3|" $x/finetune.toml > $cfg
    [ -f $r/finetuned/$4/eval/results.json ] || $g finetune --config $cfg
}
for task in $tasks; do
    for n in 10 100 1000; do finetune $task $n 0.5 $task-$n; done
    finetune $task 1000 0 $task-1000-nolm
done
stamp "fine-tuned per task"
[ -f $r/multitask/eval/results.json ] || $g finetune --config $x/multitask.toml
stamp "multitask fine-tuned"
[ -f $r/prompted/report.md ] || $g eval --ckpt $r/pretrained/checkpoint --tasks ${tasks// /,} \
    --shots 0,1,4,8 --out $r/prompted
stamp "prompted"
$g paradigms --results $r/finetuned --results $r/multitask --results $r/prompted --out $r/report
stamp "done"
