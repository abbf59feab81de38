#!/usr/bin/env bash
# Greedy decoding speed of `gptlab bench generate` against Hugging Face `generate` on the same
# weights, machine and precision, side by side in alternating rounds: a 6-layer 384-wide GPT-2
# (context 256, vocabulary 1024, random weights saved by HF and imported into gptlab), a
# 16-token random prompt, exactly 200 new tokens, batch 1 and 8, fp32 and bf16. Prints a table
# (per-token decode ms, the ratio, and gptlab's measured matvec lower bound) and writes
# runs/bench-generate-vs-hf/results.{md,jsonl}.
#   bash experiments/bench-generate-vs-hf/run.sh [ROUNDS]      (about 3 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
x=experiments/bench-generate-vs-hf
r=runs/bench-generate-vs-hf
g=${GPTLAB:-target/release/gptlab}
py=.venv/bin/python
if [ -z "${GPTLAB:-}" ]; then
    bash scripts/setup.sh
    cargo build --release --quiet
fi
mkdir -p $r
# The same random weights for both: HF initialises and saves them, gptlab imports them.
if [ ! -f $r/hf/model.safetensors ]; then
    $py - "$r/hf" <<'PY'
import sys, torch
from transformers import GPT2Config, GPT2LMHeadModel
torch.manual_seed(0)
cfg = GPT2Config(n_layer=6, n_head=6, n_embd=384, n_positions=256, vocab_size=1024, bos_token_id=0, eos_token_id=0)
GPT2LMHeadModel(cfg).save_pretrained(sys.argv[1])
PY
fi
[ -f $r/gptlab/model.safetensors ] || $g import hf-gpt2 --from $r/hf --out $r/gptlab --force
rm -f $r/results.jsonl
for round in $(seq "$rounds"); do
    for dtype in fp32 bf16; do
        for batch in 1 8; do
            $g bench generate --ckpt $r/gptlab --batch-size $batch --dtype $dtype --new-tokens 200 \
                | $py -c "import json,sys; d=json.load(sys.stdin); d.update(tool='gptlab', round=$round, dtype_arg='$dtype'); print(json.dumps(d))" >> $r/results.jsonl
            $py $x/hf_peer.py --model $r/hf --batch-size $batch --dtype $dtype --new-tokens 200 2>/dev/null \
                | $py -c "import json,sys; d=json.load(sys.stdin); d.update(tool='hf', round=$round, dtype_arg='$dtype'); print(json.dumps(d))" >> $r/results.jsonl
        done
    done
done
$py $x/table.py $r/results.jsonl | tee $r/results.md
