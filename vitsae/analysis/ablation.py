"""The measured effect of ablating each feature on its own top images, written into the stats folder.

For every feature (the live ones, or those asked for), its top images from `vitsae stats` go through the
model with the SAE spliced in and its error term kept, once as they are and once with the feature ablated
on every token (delta semantics: the error term is that of the unedited codes, `vitsae.edit`). Recorded
per feature: how many top-1 predictions moved, from which class to which, and the mean change of every
class logit. This is the intervention beside the weight-based direct logit effect (`logits.py`); the
browser only renders it.

`ablation_effects.json` (format `vitsae.ablation_effects`, version 1, see `ablation_file.py`): `model`,
`sae`, `hook`, `images_per_feature`, `class_names`, and `features`: {feature id: {`n_images`,
`n_changed`, `moved`: [[from class, to class, count], ...] (most frequent first), `mean_logit_change`:
[per class]}}.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import torch
from tqdm import tqdm

from vitsae.analysis.stats import FeatureStats
from vitsae.data.preprocess import Preprocess
from vitsae.data.sources import ImageSource
from vitsae.edit import SpliceSite, spliced


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
    batch_images: int = 64,
) -> dict[str, dict]:
    """{feature id: effect} for `features`, each ablated on its top `images_per_feature` images.

    One forward per image as it is, then one per (feature, image) pair, `batch_images` pairs at a time:
    a hook on the site's `hook_sae_acts` zeroes each pair's own feature (so both passes run the dense
    codes, and a prediction that moves moved because of the ablation, not of a different code path).
    """
    device = next(model.parameters()).device
    pairs = [
        (f, int(i))
        for f in features
        for i in stats.top_image_index_Fk[f, :images_per_feature].tolist()
        if i >= 0
    ]
    pixels = lru_cache(maxsize=4 * batch_images)(lambda index: preprocess(source[index].image))
    before: dict[int, torch.Tensor] = {}
    unique = sorted({i for _, i in pairs})
    bar = tqdm(total=len(unique) + len(pairs), unit="img", desc="ablation effects", disable=not progress)
    with spliced(model, [site]) as splice:
        (active,) = splice.sites.values()
        acts_hook = active.name("hook_sae_acts")
        for start in range(0, len(unique), batch_images):
            chunk = unique[start : start + batch_images]
            batch = torch.stack([pixels(i) for i in chunk]).to(device)
            logits = model.run_with_hooks(batch, fwd_hooks=[(acts_hook, ablate_per_image(None))])
            before.update(zip(chunk, logits.double().cpu(), strict=True))
            bar.update(len(chunk))
        after: list[torch.Tensor] = []
        for start in range(0, len(pairs), batch_images):
            chunk = pairs[start : start + batch_images]
            batch = torch.stack([pixels(i) for _, i in chunk]).to(device)
            feature_B = torch.tensor([f for f, _ in chunk], device=device)
            logits = model.run_with_hooks(batch, fwd_hooks=[(acts_hook, ablate_per_image(feature_B))])
            after.extend(logits.double().cpu())
            bar.update(len(chunk))
    bar.close()
    out: dict[str, dict] = {}
    for feature in features:
        rows = [k for k, (f, _) in enumerate(pairs) if f == feature]
        if not rows:
            continue
        ref = torch.stack([before[pairs[k][1]] for k in rows])
        changed = torch.stack([after[k] for k in rows])
        moves = Counter(
            (int(a), int(b))
            for a, b in zip(ref.argmax(1), changed.argmax(1), strict=True)
            if int(a) != int(b)
        )
        out[str(feature)] = {
            "n_images": len(rows),
            "n_changed": sum(moves.values()),
            "moved": [[a, b, n] for (a, b), n in moves.most_common()],
            "mean_logit_change": [round(v, 5) for v in (changed - ref).mean(0).tolist()],
        }
    return out


def ablate_per_image(feature_B: torch.Tensor | None):
    """A `hook_sae_acts` hook zeroing feature_B[b] at every token of image b (None: leave the codes)."""

    def hook(acts_BSF: torch.Tensor, hook) -> torch.Tensor | None:
        if feature_B is None:
            return None
        acts_BSF = acts_BSF.clone()
        acts_BSF[torch.arange(len(feature_B), device=acts_BSF.device), :, feature_B] = 0.0
        return acts_BSF

    return hook
