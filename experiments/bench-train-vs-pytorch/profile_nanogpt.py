"""Where a training step's time goes, by operator: PyTorch's profiler over nanoGPT's model.py on one
gptlab preset's config (the kernels gptlab calls through libtorch are the same ones). Prints the
top operators by self CPU time.

usage: profile_nanogpt.py NANOGPT_DIR CONFIG_JSON BATCH STEPS fp32|bf16
"""
import contextlib
import json
import sys

import torch
from torch.profiler import ProfilerActivity, profile


def main():
    nanogpt_dir, cfg = sys.argv[1], json.loads(sys.argv[2])
    batch, steps, dtype = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    sys.path.insert(0, nanogpt_dir)
    from model import GPT, GPTConfig

    torch.manual_seed(1337)
    conf = GPTConfig(block_size=cfg["block_size"], vocab_size=cfg["vocab_size"], n_layer=cfg["n_layer"],
                     n_head=cfg["n_head"], n_embd=cfg["n_embd"], dropout=0.0, bias=cfg["bias"])
    with contextlib.redirect_stdout(sys.stderr):
        model = GPT(conf)
        opt = model.configure_optimizers(0.1, 1e-4, (0.9, 0.95), "cpu")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
    x = torch.randint(cfg["vocab_size"], (batch, conf.block_size))
    y = torch.randint(cfg["vocab_size"], (batch, conf.block_size))

    def step():
        with autocast:
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
