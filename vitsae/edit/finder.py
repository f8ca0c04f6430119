"""Which features drive a prediction: rank by activation x gradient, confirm by exact ablation.

For a target scalar (a class logit, averaged over images), each feature's attribution is
sum over tokens of a_f * d(target)/d(a_f), with the SAEs spliced in with their error terms (so the model
computes what it computes unspliced, and the gradient is the one at that operating point), averaged over
images. To first order, ablating feature f changes the target by minus its attribution; the top features
are then ablated one at a time and all together (delta semantics) and the measured mean change reported
beside the linear estimate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from tqdm import tqdm

from vitsae.data.loader import ImageBatch
from vitsae.edit.edits import FeatureEdit
from vitsae.edit.splice import SpliceSite, spliced
from vitsae.errors import InvalidValue


def attributions(
    model,
    sites: list[SpliceSite],
    target_class: int,
    batches: Iterable[ImageBatch],
    progress: bool = True,
    total: int | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
    """Per site: mean attribution [F] and mean activation [F] per image (summed over its tokens); the
    number of images."""
    device = next(model.parameters()).device
    sums: dict[str, torch.Tensor] = {}
    acts_sums: dict[str, torch.Tensor] = {}
    n_images = 0
    bar = tqdm(total=total, unit="img", desc="attribution", disable=not progress)
    for batch in batches:
        pixels = batch.pixels_BCHW.to(device)
        saved: dict[str, torch.Tensor] = {}
        keep = _keeper(saved)

        with torch.enable_grad(), spliced(model, sites, error_term=True) as splice:
            names = [site.name("hook_sae_acts") for site in splice.sites.values()]
            logits = model.run_with_hooks(pixels, fwd_hooks=[(name, keep) for name in names])
            grads = torch.autograd.grad(logits[:, target_class].sum(), [saved[n] for n in names])
        for name, grad in zip(names, grads, strict=True):
            hook = name.rsplit(".", 1)[0]
            acts = saved[name].detach()
            attribution_F = (acts * grad).sum((0, 1)).double().cpu()
            sums[hook] = sums.get(hook, 0) + attribution_F
            acts_sums[hook] = acts_sums.get(hook, 0) + acts.sum((0, 1)).double().cpu()
        n_images += len(pixels)
        bar.update(len(pixels))
    bar.close()
    if n_images == 0:
        raise InvalidValue("no images to attribute over")
    return (
        {h: s / n_images for h, s in sums.items()},
        {h: s / n_images for h, s in acts_sums.items()},
        n_images,
    )


def _keeper(saved: dict[str, torch.Tensor]):
    """A hook recording the codes it sees (made a leaf that requires grad when nothing upstream does)."""

    def keep(acts: torch.Tensor, hook) -> torch.Tensor:
        if not acts.requires_grad:
            acts = acts.detach().requires_grad_(True)
        saved[hook.name] = acts
        return acts

    return keep


@torch.no_grad()
def ablation_effect(
    model,
    sites: list[SpliceSite],
    edits: list[FeatureEdit],
    target_class: int,
    batches: Iterable[ImageBatch],
) -> dict[str, float]:
    """Mean change of the target logit, and of its probability, and the fraction of images predicted
    as the target class before and after, when `edits` are applied (delta semantics)."""
    device = next(model.parameters()).device
    d_logit = d_prob = 0.0
    pred_before = pred_after = n_images = 0
    for batch in batches:
        pixels = batch.pixels_BCHW.to(device)
        with spliced(model, sites, error_term=True):
            before = model(pixels).double()
        with spliced(model, sites, error_term=True, edits=edits):
            after = model(pixels).double()
        d_logit += float((after[:, target_class] - before[:, target_class]).sum())
        d_prob += float((after.softmax(1)[:, target_class] - before.softmax(1)[:, target_class]).sum())
        pred_before += int((before.argmax(1) == target_class).sum())
        pred_after += int((after.argmax(1) == target_class).sum())
        n_images += len(pixels)
    return {
        "mean_logit_change": d_logit / n_images,
        "mean_prob_change": d_prob / n_images,
        "predicted_before": pred_before / n_images,
        "predicted_after": pred_after / n_images,
    }


def explain(
    model,
    sites: list[SpliceSite],
    target_class: int,
    batches: Callable[[], Iterable[ImageBatch]],
    top: int = 10,
    confirm: int = 5,
    progress: bool = True,
    total: int | None = None,
) -> dict:
    """Rank every spliced feature by its attribution to the target logit; confirm the top `confirm` by
    ablation, one at a time and together. Returns a JSON-ready dict (`ranking`, `together`)."""
    attribution, activation, n_images = attributions(model, sites, target_class, batches(), progress, total)
    entries = [
        (float(value), hook, feature)
        for hook, attr_F in attribution.items()
        for feature, value in enumerate(attr_F.tolist())
    ]
    entries.sort(key=lambda e: -e[0])
    ranking = []
    for rank, (value, hook, feature) in enumerate(
        tqdm(entries[:top], desc="ablations", disable=not progress)
    ):
        row = {
            "rank": rank + 1,
            "hook": hook,
            "feature": feature,
            "attribution": value,
            "mean_activation": float(activation[hook][feature]),
        }
        if rank < confirm:
            edit = FeatureEdit("ablate", (feature,), hook_name=hook)
            row["ablation"] = ablation_effect(model, sites, [edit], target_class, batches())
        ranking.append(row)
    confirmed = ranking[:confirm]
    by_hook: dict[str, list[int]] = {}
    for row in confirmed:
        by_hook.setdefault(row["hook"], []).append(row["feature"])
    together = [FeatureEdit("ablate", tuple(f), hook_name=h) for h, f in by_hook.items()]
    return {
        "target_class": target_class,
        "n_images": n_images,
        "ranking": ranking,
        "together": {
            "features": by_hook,
            "linear_estimate": -sum(row["attribution"] for row in confirmed),
            "ablation": ablation_effect(model, sites, together, target_class, batches())
            if together
            else None,
        },
    }
