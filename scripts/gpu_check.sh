#!/usr/bin/env bash
# One prepared measurement for a GPU machine, meant to run unchanged in under 8 minutes and to
# write a Markdown table (gpu_check.md) and the raw JSON lines (gpu_check.jsonl) into OUT:
#   - bench peak: the fp32 and bf16 matmul peaks MFU is measured against;
#   - bench train --preset gpt2 in bf16: tokens/s and MFU;
#   - the side-by-side peer at the same shape and precision: nanoGPT's model.py
#     (experiments/bench-train-vs-pytorch/nanogpt_peer.py), when .peers/nanoGPT is present;
#   - bench clip-train --preset vit-b-32 in bf16: training pairs/s;
#   - bench generate at batch 1 and 32 (gpt2 preset, random weights), fp32 and bf16;
#   - a resume check on CUDA: 8 training steps straight against 4, then a resume to 8, whose
#     weights must agree to float tolerance (CUDA's atomics make bitwise equality impossible).
#
#   bash scripts/gpu_check.sh OUT [GPTLAB_BINARY]
#   GPU_CHECK_SMOKE=1 bash scripts/gpu_check.sh OUT    # the same steps on CPU with tiny models:
#                                                      # checks the script itself in a minute
#
# The machine needs the gptlab binary (built elsewhere: it has no Rust) and a Python with
# torch==2.11.0 (its libtorch is the one gptlab links). It stops at once, with one line, where
# libtorch's CUDA library cannot be loaded or no GPU is visible.
set -euo pipefail
out=${1:?usage: bash scripts/gpu_check.sh OUT [GPTLAB_BINARY]}
cd "$(dirname "$0")/.."
g=${2:-target/release/gptlab}
py=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && py=.venv/bin/python
mkdir -p "$out"
fail() { echo "gpu_check: $1" >&2; exit 1; }
[ -x "$g" ] || fail "no gptlab binary at $g (build it: cargo build --release; pass its path as the second argument)"
torch_lib=$($py -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null) \
    || fail "$py cannot import torch (install torch==2.11.0, the libtorch gptlab links)"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -e "$torch_lib/libtorch_cuda.so" ] || fail "libtorch's CUDA library is not in $torch_lib (a CPU-only torch?)"
$g info --preset nano > /dev/null 2>&1 || fail "$g does not start: $($g info --preset nano 2>&1 | tail -1)"
if [ "${GPU_CHECK_SMOKE:-0}" = 1 ]; then
    dev=cpu; train=(nano 2 2); clip=(tiny 4 2); gen=(nano 8); batches=(1 2); resume_steps=(4 2)
else
    dev=cuda; train=(gpt2 16 20); clip=(vit-b-32 128 10); gen=(gpt2 200); batches=(1 32); resume_steps=(8 4)
    $py -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
        || fail "torch sees no GPU (torch.cuda.is_available() is false)"
fi
$g bench peak --device $dev > "$out/peak.json" 2> "$out/peak.err" \
    || fail "gptlab cannot use the $dev device: $(tail -1 "$out/peak.err")"

start=$(date +%s)
log() { echo "[gpu_check] $1 at $(( $(date +%s) - start )) s" >&2; }
jsonl=$out/gpu_check.jsonl
: > "$jsonl"
record() {  # name, then a command printing one JSON object
    local name=$1
    shift
    if line=$("$@" 2> "$out/$name.err"); then
        $py -c 'import json, sys; d = json.loads(sys.argv[2]); d["check"] = sys.argv[1]; print(json.dumps(d))' "$name" "$line" >> "$jsonl"
    else
        $py -c 'import json, sys; print(json.dumps({"check": sys.argv[1], "error": sys.argv[2]}))' "$name" "$(tail -1 "$out/$name.err")" >> "$jsonl"
    fi
    log "$name"
}
record peak cat "$out/peak.json"
peak_bf16=$($py -c 'import json, sys; print(json.load(open(sys.argv[1]))["peak_tflops"]["bf16"])' "$out/peak.json")
record train_bf16 $g bench train --preset ${train[0]} --batch-size ${train[1]} --steps ${train[2]} --dtype bf16 --device $dev \
    --peak-tflops "$peak_bf16"
if [ -f .peers/nanoGPT/model.py ]; then
    cfg=$($g info --preset ${train[0]} | $py -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["config"]))')
    record train_bf16_nanogpt $py experiments/bench-train-vs-pytorch/nanogpt_peer.py .peers/nanoGPT "$cfg" ${train[1]} ${train[2]} $dev bf16
else
    echo '{"check": "train_bf16_nanogpt", "error": "no .peers/nanoGPT/model.py (carry it to the machine)"}' >> "$jsonl"
fi
record clip_bf16 $g bench clip-train --preset ${clip[0]} --batch-size ${clip[1]} --steps ${clip[2]} --dtype bf16 --device $dev
for dtype in fp32 bf16; do
    for batch in "${batches[@]}"; do
        record "generate_${dtype}_b$batch" $g bench generate --preset ${gen[0]} --batch-size $batch --prompt-tokens 16 \
            --new-tokens ${gen[1]} --dtype $dtype --runs 3 --device $dev
    done
done

# The resume check: a small corpus, a nano model, 8 steps straight against 4 + a resume to 8.
r=$out/resume
rm -rf "$r" && mkdir -p "$r"
$g data synth --out "$r/corpus" --docs 2000 --seed 7 > /dev/null
$g tokenizer train --corpus "$r/corpus" --vocab-size 512 --out "$r/tokenizer.json" > /dev/null
$g data tokenize --corpus "$r/corpus" --tokenizer "$r/tokenizer.json" --out "$r/shards" > /dev/null
config() {  # out dir, max steps
    cat > "$r/$(basename "$1")_$2.toml" <<EOF
out_dir = "$1"
data = "$r/shards"

[model]
preset = "nano"
block_size = 64
dropout = 0.1

[train]
batch_size = 8
max_steps = $2
decay_steps = 8
warmup_steps = 2
lr = 3e-3
eval_interval = 4
eval_batches = 2
log_interval = 2
ckpt_interval = 4
device = "$dev"
EOF
    echo "$r/$(basename "$1")_$2.toml"
}
$g train --config "$(config "$r/straight" ${resume_steps[0]})" > "$r/straight.log" 2>&1
$g train --config "$(config "$r/resumed" ${resume_steps[1]})" > "$r/resumed.log" 2>&1
$g train --config "$(config "$r/resumed" ${resume_steps[0]})" --resume >> "$r/resumed.log" 2>&1
record resume $py - "$r/straight/checkpoint/model.safetensors" "$r/resumed/checkpoint/model.safetensors" <<'PY'
import json, sys
from safetensors.torch import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
print(json.dumps({"tensors": len(a), "same_names": sorted(a) == sorted(b), "max_abs_diff": diff, "ok": sorted(a) == sorted(b) and diff < 1e-4}))
PY
$py - "$jsonl" "$out/gpu_check.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = {"peak": ["device", "peak_tflops"], "train_bf16": ["preset", "tokens_per_s", "mfu", "peak_tflops"],
        "train_bf16_nanogpt": ["tokens_per_s"], "clip_bf16": ["preset", "pairs_per_s"],
        "resume": ["max_abs_diff", "ok"]}
lines = ["| check | result |", "|---|---|"]
for r in rows:
    name = r["check"]
    if "error" in r:
        lines.append(f"| {name} | error: {r['error']} |")
        continue
    fields = keys.get(name) or (["model", "decode_ms_per_token", "decode_tokens_per_s", "prefill_ms", "matvec_ms_per_token", "ratio_to_bound"]
                                if name.startswith("generate") else list(r))
    lines.append(f"| {name} | " + ", ".join(f"{k} {r.get(k)}" for k in fields) + " |")
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
log "done"
