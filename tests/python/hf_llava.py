"""HF transformers side of the LLaVA interop test (random weights: no download).

make DIR       build a random tiny LlavaForConditionalGeneration (GPT-2 text with an untied
               head, CLIP vision), save_pretrained(DIR), and write DIR/inputs.json (two images'
               pixels, ids with each image token repeated once per feature) and DIR/logits.json
logits DIR IN OUT
               load DIR with from_pretrained and write the logits of the inputs IN to OUT
"""
import json
import sys

import torch
from transformers import CLIPVisionConfig, GPT2Config, LlavaConfig, LlavaForConditionalGeneration

IMAGE = 7


def logits(model, inputs):
    pixels = torch.tensor(inputs["pixels"], dtype=torch.float32)
    ids = torch.tensor(inputs["ids"])
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=pixels).logits


def make(d):
    torch.manual_seed(0)
    vision = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=48, intermediate_size=192,
                              num_hidden_layers=3, num_attention_heads=4, hidden_act="quick_gelu")
    text = GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                      tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE,
                      projector_hidden_act="gelu", vision_feature_layer=-2,
                      vision_feature_select_strategy="default", image_seq_length=16,
                      tie_word_embeddings=False)
    model = LlavaForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases, so a dropped one would show
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(d)
    pixels = torch.randn(2, 3, 32, 32)
    ids = [1, 2] + [IMAGE] * 16 + [3, 4, 5] + [IMAGE] * 16 + [6, 8, 9]
    inputs = {"pixels": pixels.tolist(), "ids": [ids]}
    json.dump(inputs, open(f"{d}/inputs.json", "w"))
    json.dump(logits(model, inputs).tolist(), open(f"{d}/logits.json", "w"))


def main():
    if sys.argv[1] == "make":
        make(sys.argv[2])
    else:
        model = LlavaForConditionalGeneration.from_pretrained(sys.argv[2]).eval()
        json.dump(logits(model, json.load(open(sys.argv[3]))).tolist(), open(sys.argv[4], "w"))


if __name__ == "__main__":
    main()
