"""HF transformers' CLIPModel as the peer of `gptlab bench clip-train`: the tower shapes of gptlab's
`small` CLIP preset, random pixels and captions ending in end-of-text, AdamW with CLIP's settings (betas 0.9/0.98,
eps 1e-6, decay 0.2 on >= 2-D tensors), grad-norm clipping and the logit-scale clamp; 3 untimed
warm-up steps, then STEPS timed ones. bf16 is PyTorch's autocast. Prints one JSON line.

usage: hf_clip_peer.py BATCH TEXT_LEN STEPS DEVICE fp32|bf16   (the `small` preset's shape)
"""
import contextlib
import json
import math
import sys

import torch
from transformers import CLIPConfig, CLIPModel

from timing import time_steps

# gptlab's `small` CLIP preset: 64 px images, 8 px patches, both towers 4 layers of width 128
# with 4 heads, text context 64, embedding 128, exact GELU; a 512-token vocabulary, eot id 0.
SMALL = dict(width=128, layers=4, heads=4, image_size=64, patch_size=8, context=64, embed=128, vocab=512, eot=0)


def main():
    batch, text_len, steps, device, dtype = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    s = SMALL
    tower = dict(hidden_size=s["width"], intermediate_size=4 * s["width"], num_hidden_layers=s["layers"],
                 num_attention_heads=s["heads"], hidden_act="gelu")
    cfg = CLIPConfig(
        text_config=dict(tower, vocab_size=s["vocab"], max_position_embeddings=s["context"], eos_token_id=s["eot"],
                         bos_token_id=1, pad_token_id=1),
        vision_config=dict(tower, image_size=s["image_size"], patch_size=s["patch_size"]),
        projection_dim=s["embed"],
    )
    torch.manual_seed(1337)
    model = CLIPModel(cfg).to(device).train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.2}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.98), eps=1e-6)
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    autocast = (torch.autocast(device_type=device_type, dtype=torch.bfloat16) if dtype == "bf16"
                else contextlib.nullcontext())
    pixels = torch.randn(batch, 3, s["image_size"], s["image_size"], device=device)
    words = torch.randint(s["eot"] + 1, s["vocab"], (batch, text_len - 1), device=device)
    ids = torch.cat([words, torch.full((batch, 1), s["eot"], device=device)], 1)

    def step():
        with autocast:
            loss = model(input_ids=ids, pixel_values=pixels, return_loss=True).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        return loss

    secs = time_steps(step, steps, device_type)
    print(json.dumps({"peer": f"transformers CLIPModel, torch {torch.__version__}", "dtype": dtype,
                      "attn": model.config._attn_implementation, "pairs_per_s": steps * batch / secs}))

if __name__ == "__main__":
    main()
