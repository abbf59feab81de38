#!/usr/bin/env bash
# gptlab's harness against lm-evaluation-harness itself: the same checkpoint (gptlab's, and its
# `export hf-gpt2` copy for lm-eval's `hf` model), the same task files (the built-in tasks
# written out as lm-eval YAML + JSONL), zero shots; compare.py sets accuracies and per-document
# log-likelihoods side by side.
#   bash experiments/lm_eval_agreement/run.sh [CKPT]     (default: the quickstart's checkpoint)
# lm-eval is not a dependency of gptlab: the first run installs it into .venv
# (`pip install "lm-eval[hf]==0.4.13"`, which leaves torch and transformers as they are).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh
cargo build --release --quiet
g=target/release/gptlab
ckpt=${1:-runs/quickstart/checkpoint}
r=runs/lm_eval_agreement
limit=100
tasks=arithmetic_2da,arithmetic_2da_mc,scene_count_mc,lambada_scene,lambada_scene_rolling,word_map
[ -d "$ckpt" ] || $g quickstart
.venv/bin/python -c "import lm_eval, accelerate" 2>/dev/null || .venv/bin/pip install -q "lm-eval[hf]==0.4.13"
rm -rf $r && mkdir -p $r
$g export hf-gpt2 --ckpt "$ckpt" --out $r/hf
$g eval --write-tasks $r/tasks --tasks $tasks
start=$(date +%s.%N)
$g eval --ckpt "$ckpt" --tasks $(echo $tasks | sed "s|\([a-z0-9_]*\)|$r/tasks/\1.yaml|g") --shots 0 --limit $limit --out $r/gptlab
echo "gptlab eval: $(echo "$(date +%s.%N) - $start" | bc) s"
# lm-eval reads data_files relative to the working directory: run it where the task files are.
start=$(date +%s.%N)
root=$(pwd)
(cd $r/tasks && "$root/.venv/bin/lm_eval" --model hf --model_args "pretrained=$root/$r/hf,dtype=float32" \
    --device cpu --batch_size 32 --tasks $tasks --include_path . --num_fewshot 0 --limit $limit \
    --output_path "$root/$r/lmeval" --log_samples > "$root/$r/lmeval.log" 2>&1) || { tail -20 $r/lmeval.log; exit 1; }
echo "lm-eval: $(echo "$(date +%s.%N) - $start" | bc) s"
.venv/bin/python experiments/lm_eval_agreement/compare.py $r/gptlab $r/lmeval | tee $r/agreement.md
