"""nanoGPT's own model.py as the peer of `gptlab bench train`: its GPT and its configure_optimizers
(AdamW, decay on >= 2-D tensors), on the same config, batch and random tokens, timed the same way
(3 untimed warm-up steps, then STEPS full steps: forward, backward, clip, AdamW, zero-grad). bf16
is PyTorch's autocast, as nanoGPT's train.py runs it. Prints one JSON line on stdout; with a
last argument `profile`, PyTorch's profiler table of the timed steps instead (where the time goes,
by operator: the kernels gptlab calls through libtorch are the same ones).

usage: nanogpt_peer.py NANOGPT_DIR CONFIG_JSON BATCH STEPS DEVICE fp32|bf16 [profile]
       (CONFIG_JSON: the "config" of `gptlab info --preset P`)
"""
import contextlib
import json
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from timing import time_steps


def main():
    nanogpt_dir, cfg = sys.argv[1], json.loads(sys.argv[2])
    batch, steps, device, dtype = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
    sys.path.insert(0, nanogpt_dir)
    from model import GPT, GPTConfig  # nanoGPT's model.py

    torch.manual_seed(1337)
    conf = GPTConfig(block_size=cfg["block_size"], vocab_size=cfg["vocab_size"], n_layer=cfg["n_layer"],
                     n_head=cfg["n_head"], n_embd=cfg["n_embd"], dropout=0.0, bias=cfg["bias"])
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    with contextlib.redirect_stdout(sys.stderr):  # nanoGPT prints its parameter counts
        model = GPT(conf).to(device)
        opt = model.configure_optimizers(0.1, 1e-4, (0.9, 0.95), device_type)
    autocast = (torch.autocast(device_type=device_type, dtype=torch.bfloat16) if dtype == "bf16"
                else contextlib.nullcontext())
    x = torch.randint(cfg["vocab_size"], (batch, conf.block_size), device=device)
    y = torch.randint(cfg["vocab_size"], (batch, conf.block_size), device=device)

    def step():
        with autocast:
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    if sys.argv[7:] == ["profile"]:
        time_steps(step, 1, device_type)  # warm up outside the profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
        return
    secs = time_steps(step, steps, device_type)
    print(json.dumps({"peer": f"nanoGPT model.py, torch {torch.__version__}", "dtype": dtype,
                      "tokens_per_s": steps * batch * conf.block_size / secs, "threads": torch.get_num_threads()}))

if __name__ == "__main__":
    main()
