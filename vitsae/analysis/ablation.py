"""The measured effect of ablating each feature on its own top images, written into the stats folder.

For every feature (the live ones, or those asked for), its top images from `vitsae stats` go through the
model with the SAE spliced in and its error term kept, once as they are and once with the feature ablated
on every token (delta semantics, `vitsae.edit`). Recorded per feature: how many top-1 predictions moved,
from which class to which, and the mean change of every class logit. This is the intervention beside the
weight-based direct logit effect (`logits.py`); the browser only renders it.

`ablation_effects.json` (format `vitsae.ablation_effects`, version 1): `model`, `sae`, `hook`,
`images_per_feature`, `class_names`, and `features`: {feature id: {`n_images`, `n_changed`, `moved`:
[[from class, to class, count], ...] (most frequent first), `mean_logit_change`: [per class]}}.
"""

from __future__ import annotations

from collections import Counter

import torch
from tqdm import tqdm

from vitsae.analysis.stats import FeatureStats
from vitsae.data.preprocess import Preprocess
from vitsae.data.sources import ImageSource
from vitsae.edit import FeatureEdit, SpliceSite, spliced


@torch.no_grad()
def ablation_effects(
    model,
    site: SpliceSite,
    stats: FeatureStats,
    source: ImageSource,
    preprocess: Preprocess,
    features: list[int],
    images_per_feature: int = 8,
    progress: bool = True,
) -> dict[str, dict]:
    """{feature id: effect} for `features`, each ablated on its top `images_per_feature` images."""
    device = next(model.parameters()).device
    tops = {
        f: [int(i) for i in stats.top_image_index_Fk[f, :images_per_feature].tolist() if i >= 0]
        for f in features
    }
    pixels: dict[int, torch.Tensor] = {}
    out: dict[str, dict] = {}
    for feature in tqdm(features, unit="feature", desc="ablation effects", disable=not progress):
        images = tops[feature]
        if not images:
            continue
        for index in images:
            if index not in pixels:
                pixels[index] = preprocess(source[index].image)
        batch = torch.stack([pixels[i] for i in images]).to(device)
        with spliced(model, [site]):
            ref = model(batch).double().cpu()
        with spliced(model, [site], edits=[FeatureEdit("ablate", (feature,))]):
            after = model(batch).double().cpu()
        moves = Counter(
            (int(a), int(b)) for a, b in zip(ref.argmax(1), after.argmax(1), strict=True) if int(a) != int(b)
        )
        out[str(feature)] = {
            "n_images": len(images),
            "n_changed": sum(moves.values()),
            "moved": [[a, b, n] for (a, b), n in moves.most_common()],
            "mean_logit_change": [round(v, 5) for v in (after - ref).mean(0).tolist()],
        }
    return out
