"""The peer: Hugging Face `generate` (greedy, KV cache) on a GPT-2 directory, timed the way
`gptlab bench generate` times itself: a random prompt of P tokens, exactly N new tokens
(`min_new_tokens` = `max_new_tokens` = N, no end-of-text), the prefill as the time to the first
new token and the decode rate over the N - 1 later ones, median of R runs after one warm-up.
A StoppingCriteria that never stops stamps each step. Prints one JSON line.

    python hf_peer.py --model DIR --batch-size B --prompt-tokens P --new-tokens N --dtype fp32|bf16 [--runs R]
"""

import argparse
import json
import statistics
import time

import torch
from transformers import GPT2LMHeadModel, StoppingCriteria, StoppingCriteriaList


class Stamps(StoppingCriteria):
    def __init__(self, start):
        self.start, self.times = start, []

    def __call__(self, input_ids, scores, **kwargs):
        self.times.append(time.perf_counter() - self.start)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1337)
    a = ap.parse_args()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    model = GPT2LMHeadModel.from_pretrained(a.model, torch_dtype=dtype).eval()
    torch.manual_seed(a.seed)
    prompt = torch.randint(model.config.vocab_size, (a.batch_size, a.prompt_tokens))
    prefill, decode = [], []
    with torch.inference_mode():
        for run in range(a.runs + 1):
            start = time.perf_counter()
            stamps = Stamps(start)
            out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, use_cache=True,
                                 max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, eos_token_id=None,
                                 pad_token_id=0, stopping_criteria=StoppingCriteriaList([stamps]))
            assert out.shape[1] == a.prompt_tokens + a.new_tokens, out.shape
            if run:
                prefill.append(stamps.times[0])
                decode.append((stamps.times[-1] - stamps.times[0]) / (a.new_tokens - 1))
    d = statistics.median(decode)
    print(json.dumps({"peer": "hf generate", "dtype": a.dtype, "threads": torch.get_num_threads(),
                      "batch_size": a.batch_size, "prompt_tokens": a.prompt_tokens, "new_tokens": a.new_tokens,
                      "prefill_ms": statistics.median(prefill) * 1e3, "decode_ms_per_token": d * 1e3,
                      "decode_tokens_per_s": a.batch_size / d}))


if __name__ == "__main__":
    main()
