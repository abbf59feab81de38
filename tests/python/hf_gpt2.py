"""HF transformers side of the GPT-2 interop tests (random weights: no download).

make DIR   build a random GPT2LMHeadModel, save_pretrained(DIR), write DIR/ids.json and
           DIR/logits.json (the reference logits on those ids)
logits DIR IDS_JSON OUT_JSON   load DIR with from_pretrained and write its logits on IDS
"""
import json
import sys

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def logits_of(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.tolist()


def main():
    mode, d = sys.argv[1], sys.argv[2]
    if mode == "make":
        torch.manual_seed(0)
        cfg = GPT2Config(vocab_size=97, n_positions=16, n_embd=32, n_layer=2, n_head=4)
        model = GPT2LMHeadModel(cfg).eval()
        # Non-trivial LayerNorm parameters, so a dropped or swapped bias would show.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "ln" in name:
                    p.add_(0.1 * torch.randn_like(p))
        model.save_pretrained(d)
        ids = torch.randint(0, 97, (2, 12)).tolist()
        json.dump(ids, open(f"{d}/ids.json", "w"))
        json.dump(logits_of(model, ids), open(f"{d}/logits.json", "w"))
    elif mode == "logits":
        model = GPT2LMHeadModel.from_pretrained(d).eval()
        ids = json.load(open(sys.argv[3]))
        json.dump(logits_of(model, ids), open(sys.argv[4], "w"))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
