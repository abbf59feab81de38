#!/usr/bin/env bash
# InstructGPT in miniature, on the embedded world's instructions and its programmatic labeler:
#   SFT of a small (0.94M) and a large (3.45M) pretrained GPT on 200 demonstrations;
#   the labeler ranks the small SFT model's own samples (InstructGPT's comparison data), and a
#   reward model learns those rankings with the labeler's hand-written candidates (K-wise loss);
#   PPO of the small SFT model against it, without and with the pretraining mix (PPO-ptx), at
#   beta 0.1 and at the paper's 0.02; DPO on the same rankings;
#   the labeler's win rates on 200 held-out prompts, the harness before and after, and one
#   report: runs/instructgpt/report/rlhf.md.
#   bash experiments/instructgpt/run.sh      (11.4 minutes on 2 CPU cores after pretraining;
#                                            the base models took 3 and 17 more, once)
# Outputs that exist are reused; delete runs/instructgpt to run again.
set -euo pipefail
cd "$(dirname "$0")/../.."
x=experiments/instructgpt
r=runs/instructgpt
d=data/instructgpt
t=data/text-micro
g=${GPTLAB:-target/release/gptlab}
if [ -z "${GPTLAB:-}" ]; then
    bash scripts/setup.sh
    cargo build --release --quiet
fi
start=$(date +%s)
stamp() { echo "[instructgpt] $1 at $(( $(date +%s) - start )) s"; }
[ -f $t/shards/meta.json ] || {
    $g data synth --out $t/corpus --config experiments/text-micro/synth.toml
    $g tokenizer train --corpus $t/corpus --vocab-size 1024 --out $t/tokenizer.json
    $g data tokenize --corpus $t/corpus --tokenizer $t/tokenizer.json --out $t/shards
}
for size in small large; do
    [ -d $r/$size/checkpoint ] || $g train --config $x/$size.toml
done
stamp "base models ready"
# Demonstrations, hand-written rankings, preferences and PPO prompts; a second prompt set (seed 1)
# whose answers the small SFT model samples for the labeler to rank.
[ -f $d/prompts.jsonl ] || $g rlhf data --out $d --prompts 2000
[ -f $d/rm_prompts/prompts.jsonl ] || $g rlhf data --out $d/rm_prompts --prompts 2000 --seed 1
head -n 200 $d/sft.jsonl > $d/sft_200.jsonl
for size in small large; do
    [ -d $r/sft_$size/checkpoint ] || $g rlhf sft --config $x/sft_$size.toml
done
stamp "SFT done"
for split in "" _val; do
    [ -f $d/rankings_sft_small$split.jsonl ] || $g rlhf label --ckpt $r/sft_small/checkpoint \
        --prompts $d/rm_prompts/prompts$split.jsonl --out $d/rankings_sft_small$split.jsonl
    cat $d/rankings$split.jsonl $d/rankings_sft_small$split.jsonl > $d/rankings_mix$split.jsonl
done
[ -d $r/rm/checkpoint ] || $g rlhf rm --config $x/rm.toml
stamp "reward model trained"
for run in ppo ppo_ptx ppo_beta002; do
    [ -d $r/$run/checkpoint ] || $g rlhf ppo --config $x/$run.toml
done
stamp "PPO done"
[ -d $r/dpo/checkpoint ] || $g rlhf dpo --config $x/dpo.toml
stamp "DPO done"
models="sft_small ppo ppo_ptx ppo_beta002 dpo sft_large"
ckpts=""
for m in $models; do ckpts="$ckpts --ckpt $r/$m/checkpoint"; done
$g rlhf compare $ckpts --prompts $d/prompts_val.jsonl --out $r/compare
stamp "compared"
[ -f $r/eval/summary.jsonl ] || $g eval --ckpt $r/small/checkpoint $ckpts \
    --tasks lambada_scene_rolling,scene_count_mc,arithmetic_2da_mc,word_map --shots 0,4 --limit 200 --out $r/eval
stamp "evaluated"
$g rlhf report --compare $r/compare --baseline sft_small --ppo $r/ppo --ppo $r/ppo_ptx --ppo $r/ppo_beta002 \
    --eval $r/eval --out $r/report
stamp "done"
