"""HF transformers side of the CLIP interop test (random weights: no download).

make DIR   build a random small CLIPModel, save_pretrained(DIR), and write DIR/inputs.json
           (pixel values and token ids) and DIR/features.json (image and text features)
"""
import json
import sys

import torch
from transformers import CLIPConfig, CLIPModel


def main():
    d = sys.argv[2]
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, eos_token_id=5,
                         bos_token_id=4, pad_token_id=1, hidden_act="quick_gelu"),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=48, intermediate_size=192,
                           num_hidden_layers=2, num_attention_heads=4, hidden_act="quick_gelu"),
        projection_dim=24,
    )
    model = CLIPModel(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases, so a dropped one would show
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(d)
    pixels = torch.randn(2, 3, 32, 32)
    ids = torch.randint(6, 99, (3, 10))
    ids[0, 9] = 5
    ids[1, 4] = 5  # end-of-text mid-sequence: what follows must not matter
    ids[2, 0] = 5
    with torch.no_grad():
        image = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        text = model.text_projection(model.text_model(input_ids=ids).pooler_output)
    json.dump({"pixels": pixels.tolist(), "ids": ids.tolist()}, open(f"{d}/inputs.json", "w"))
    json.dump({"image": image.tolist(), "text": text.tolist(),
               "logit_scale": model.logit_scale.item()}, open(f"{d}/features.json", "w"))


if __name__ == "__main__":
    main()
