"""Medians over rounds of results.jsonl (one line per tool, dtype, batch and round) as a table."""

import collections
import json
import statistics
import sys

rows = [json.loads(l) for l in open(sys.argv[1])]
cell = collections.defaultdict(list)
for r in rows:
    cell[(r["dtype_arg"], r["batch_size"], r["tool"])].append(r)
print("| dtype | batch | gptlab ms/token | HF ms/token | gptlab's speed-up | gptlab tokens/s | HF tokens/s "
      "| matvec bound ms | gptlab / bound | gptlab prefill ms | HF prefill ms |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for dtype in ("fp32", "bf16"):
    for batch in sorted({k[1] for k in cell}):
        ours, hf = cell.get((dtype, batch, "gptlab")), cell.get((dtype, batch, "hf"))
        if not ours or not hf:
            continue
        med = lambda rs, k: statistics.median(r[k] for r in rs)
        o, h, bound = med(ours, "decode_ms_per_token"), med(hf, "decode_ms_per_token"), med(ours, "matvec_ms_per_token")
        print(f"| {dtype} | {batch} | {o:.3f} | {h:.3f} | {h / o:.2f}x | {batch * 1e3 / o:.0f} | {batch * 1e3 / h:.0f} "
              f"| {bound:.3f} | {o / bound:.2f}x | {med(ours, 'prefill_ms'):.2f} | {med(hf, 'prefill_ms'):.2f} |")
print(f"\nMedians over {len({r['round'] for r in rows})} rounds; 200 new tokens after a 16-token prompt.")
