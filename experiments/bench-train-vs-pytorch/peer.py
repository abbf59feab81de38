"""The PyTorch peer for `gptlab bench train`: the same GPT-2 architecture (pre-LN, fused qkv, SDPA
causal attention, tied head, exact GELU), the same AdamW (decay on >= 2-D tensors), the same
grad-norm clipping, batch and random tokens, timed the same way. Prints one JSON line.

usage: peer.py CONFIG_JSON BATCH STEPS DEVICE   (CONFIG_JSON: the "config" of `gptlab info`)
"""
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c, n_head, bias):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(c, bias=bias)
        self.c_attn = nn.Linear(c, 3 * c, bias=bias)
        self.c_proj = nn.Linear(c, c, bias=bias)
        self.ln_2 = nn.LayerNorm(c, bias=bias)
        self.c_fc = nn.Linear(c, 4 * c, bias=bias)
        self.mlp_proj = nn.Linear(4 * c, c, bias=bias)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).contiguous().view(b, t, c)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c = cfg["n_embd"]
        self.wte = nn.Embedding(cfg["vocab_size"], c)
        self.wpe = nn.Embedding(cfg["block_size"], c)
        self.h = nn.ModuleList(Block(c, cfg["n_head"], cfg["bias"]) for _ in range(cfg["n_layer"]))
        self.ln_f = nn.LayerNorm(c, bias=cfg["bias"])
        # GPT-2's init, as gptlab and nanoGPT use: PyTorch's defaults (N(0, 1) embeddings into a
        # tied head) saturate the softmax, and the denormal gradients that follow slow matmuls.
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * cfg["n_layer"]) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
    cfg = json.loads(sys.argv[1])
    batch, steps, device = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    torch.manual_seed(1337)
    model = GPT(cfg).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
    t = cfg["block_size"]
    x = torch.randint(cfg["vocab_size"], (batch, t), device=device)
    y = torch.randint(cfg["vocab_size"], (batch, t), device=device)

    def step():
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(3):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()
    secs = time.perf_counter() - start
    print(json.dumps({"peer": f"pytorch {torch.__version__}", "tokens_per_s": steps * batch * t / secs,
                      "threads": torch.get_num_threads(), "loss": math.log(cfg["vocab_size"])}))


if __name__ == "__main__":
    main()
