"""The image explorer's predictions: a classifier's top classes for each chosen image, and its prediction
after ablating each of the image's main SAE features (the SAE spliced in with its error term, the feature
zeroed on every token: `vitsae.edit`'s delta semantics, so only the ablation moves the logits).

Stored in `images.json` under `predictions` (see `vitsae/analysis/images.py`): `class_names`, `top`:
per image [[class, probability], ...] (best first), and `ablated`: per image {feature: [top-1 class after,
its probability, the change of the original top-1 class's probability]}.
"""

from __future__ import annotations

from typing import Any

import torch
from tqdm import tqdm

from vitsae.analysis.images import ImageData
from vitsae.data.preprocess import Preprocess
from vitsae.data.sources import ImageSource
from vitsae.edit import FeatureEdit, SpliceSite, spliced
from vitsae.edit.inputs import class_names


def main_features(data: ImageData, position: int, n: int) -> list[int]:
    """The `n` features with the largest activation summed over the image's tokens (its top codes)."""
    index_Tc, value_Tc = data.code_index_ITc[position].long(), data.code_value_ITc[position]
    keep = index_Tc >= 0
    sums = torch.zeros(int(index_Tc.max()) + 1 if keep.any() else 1).index_add_(
        0, index_Tc[keep], value_Tc[keep]
    )
    order = torch.argsort(sums, descending=True)[:n]
    return [int(f) for f in order if sums[f] > 0]


@torch.no_grad()
def image_predictions(
    model,
    site: SpliceSite,
    data: ImageData,
    source: ImageSource,
    preprocess: Preprocess,
    *,
    n_features: int = 6,
    top: int = 5,
    progress: bool = False,
) -> dict[str, Any]:
    """Top predictions and ablated-feature predictions of `data`'s images (see module doc)."""
    device = next(model.parameters()).device
    images = data.image_I.tolist()
    pixels_BCHW = torch.stack([preprocess(source[i].image) for i in images]).to(device)
    probs_BC = model(pixels_BCHW).double().softmax(1).cpu()
    names = class_names(source, probs_BC.shape[1])
    best_B = probs_BC.argmax(1)
    features = {p: main_features(data, p, n_features) for p in range(len(images))}
    by_feature: dict[int, list[int]] = {}
    for position, chosen in features.items():
        for f in chosen:
            by_feature.setdefault(f, []).append(position)
    ablated: list[dict[str, list[Any]]] = [{} for _ in images]
    for f, positions in tqdm(
        by_feature.items(), desc="ablated predictions", unit="feature", disable=not progress
    ):
        with spliced(model, [site], error_term=True, edits=[FeatureEdit("ablate", (f,))]):
            after_BC = model(pixels_BCHW[positions]).double().softmax(1).cpu()
        for row, position in enumerate(positions):
            cls = int(after_BC[row].argmax())
            change = after_BC[row, best_B[position]] - probs_BC[position, best_B[position]]
            ablated[position][str(f)] = [
                names[cls],
                round(float(after_BC[row, cls]), 4),
                round(float(change), 4),
            ]
    values_Bk, classes_Bk = probs_BC.topk(min(top, probs_BC.shape[1]), dim=1)
    return {
        "class_names": names,
        "top": [
            [[names[int(c)], round(float(v), 4)] for c, v in zip(cls_k, val_k, strict=True)]
            for cls_k, val_k in zip(classes_Bk, values_Bk, strict=True)
        ],
        "ablated": ablated,
    }
