"""Exact ablation of edge sources: how much each target changes when one source feature is zeroed.

Each source feature is ablated on its own with `FeatureEdit("ablate")` through the splice (delta semantics:
x' = x - a_i W_dec[i] at its site, every SAE spliced with its error term, so later SAEs see the edited
stream and the model computes exactly what it computes with that one change). The targets' scalars are read
from the same forward; with `aggregate="top"` on the tokens chosen by the unedited forward. To first order
the change is minus the edge's attribution.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tqdm import tqdm

from vitsae.circuits.target import Target
from vitsae.data.loader import ImageBatch
from vitsae.edit.edits import FeatureEdit
from vitsae.edit.splice import SpliceSite, spliced


def _run(model, sites, pixels, edits, hooks) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    codes: dict[str, torch.Tensor] = {}

    def keep(acts: torch.Tensor, hook) -> torch.Tensor:
        codes[hook.name.rsplit(".", 1)[0]] = acts
        return acts

    with spliced(model, sites, error_term=True, edits=edits):
        logits = model.run_with_hooks(pixels, fwd_hooks=[(f"{h}.hook_sae_acts", keep) for h in hooks])
    return logits, codes


@torch.no_grad()
def ablation_effects(
    model,
    sites: list[SpliceSite],
    sources: list[tuple[str, int]],
    targets: list[list[Target]],
    batches: Iterable[ImageBatch],
    aggregate: str,
    top_r: int,
    progress: bool = False,
) -> list[list[float]]:
    """For each source (hook, feature) and each of its targets: the mean change per image of the target's
    scalar when the source is ablated."""
    device = next(model.parameters()).device
    hooks = sorted({t.hook for group in targets for t in group if t.kind == "feature"})
    sums = [[0.0] * len(group) for group in targets]
    n_images = 0
    for batch in tqdm(batches, desc="ablations", disable=not progress):
        pixels = batch.pixels_BCHW.to(device)
        logits, codes = _run(model, sites, pixels, [], hooks)
        for s, ((hook, feature), group) in enumerate(zip(sources, targets, strict=True)):
            edit = FeatureEdit("ablate", (feature,), hook_name=hook)
            after_logits, after_codes = _run(model, sites, pixels, [edit], hooks)
            for t, target in enumerate(group):
                before_B, chosen = target.scalar(logits, codes, aggregate, top_r)
                after_B, _ = target.scalar(after_logits, after_codes, aggregate, top_r, chosen)
                sums[s][t] += float((after_B.double() - before_B.double()).sum())
        n_images += len(pixels)
    return [[value / max(n_images, 1) for value in row] for row in sums]
