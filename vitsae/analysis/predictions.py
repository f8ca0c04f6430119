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

from vitsae.analysis.ablation import ablate_per_image
from vitsae.analysis.images import ImageData
from vitsae.data.preprocess import Preprocess
from vitsae.data.sources import ImageSource
from vitsae.edit import SpliceSite, spliced
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
    batch_images: int = 64,
    progress: bool = False,
) -> dict[str, Any]:
    """Top predictions and ablated-feature predictions of `data`'s images (see module doc).

    The (image, feature) pairs run `batch_images` at a time through the spliced model, each pair's own
    feature zeroed by `vitsae.analysis.ablation`'s per-image hook on the site's `hook_sae_acts`.
    """
    device = next(model.parameters()).device
    images = data.image_I.tolist()
    pixels_BCHW = torch.stack([preprocess(source[i].image) for i in images]).to(device)
    probs_BC = model(pixels_BCHW).double().softmax(1).cpu()
    names = class_names(source, probs_BC.shape[1])
    best_B = probs_BC.argmax(1)
    pairs = [(p, f) for p in range(len(images)) for f in main_features(data, p, n_features)]
    ablated: list[dict[str, list[Any]]] = [{} for _ in images]
    bar = tqdm(total=len(pairs), desc="ablated predictions", unit="pair", disable=not progress)
    with spliced(model, [site]) as splice:
        (active,) = splice.sites.values()
        acts_hook = active.name("hook_sae_acts")
        for start in range(0, len(pairs), batch_images):
            chunk = pairs[start : start + batch_images]
            feature_B = torch.tensor([f for _, f in chunk], device=device)
            batch = pixels_BCHW[[p for p, _ in chunk]]
            logits = model.run_with_hooks(batch, fwd_hooks=[(acts_hook, ablate_per_image(feature_B))])
            for (position, f), after_C in zip(chunk, logits.double().softmax(1).cpu(), strict=True):
                cls, was = int(after_C.argmax()), int(best_B[position])
                change = float(after_C[was] - probs_BC[position, was])
                ablated[position][str(f)] = [names[cls], round(float(after_C[cls]), 4), round(change, 4)]
            bar.update(len(chunk))
    bar.close()
    values_Bk, classes_Bk = probs_BC.topk(min(top, probs_BC.shape[1]), dim=1)
    return {
        "class_names": names,
        "top": [
            [[names[int(c)], round(float(v), 4)] for c, v in zip(cls_k, val_k, strict=True)]
            for cls_k, val_k in zip(classes_Bk, values_Bk, strict=True)
        ],
        "ablated": ablated,
    }
