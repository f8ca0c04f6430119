"""Pruning and faithfulness: keep the top-n nodes by attribution, mean-ablate the rest, measure recovery.

A circuit C of n nodes keeps those features' activations at every source site and sets every other
feature to its mean over the images at that token position; the error nodes are kept as they are, or
mean-ablated too (both curves are reported). The target's recovery is (m(C) - m(empty)) / (m(M) - m(empty)),
with m the target's mean over the images, M the model (every SAE spliced with its error term: the model's
own output) and the empty circuit every feature and error node mean-ablated.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tqdm import tqdm

from vitsae.circuits.target import Target
from vitsae.data.loader import ImageBatch
from vitsae.edit.splice import SpliceSite, spliced

GRID = (1, 2, 3, 5, 8, 12, 20, 30, 50, 80, 120, 200, 300, 500, 800, 1200, 2000, 3000, 5000, 8000)


def grid_sizes(n_ranked: int, grid: tuple[int, ...] = GRID) -> list[int]:
    """Circuit sizes to measure: 0, the grid below `n_ranked`, and `n_ranked` (every ranked node)."""
    return sorted({0, n_ranked, *(n for n in grid if n < n_ranked)})


def _mean_ablating(keep: dict[str, torch.Tensor], means: dict[str, torch.Tensor], store: dict | None):
    """A hook on `hook_sae_acts` (keep [F] bool per site) or `hook_sae_error` (keep a 0-d bool): the kept
    entries as they are, the others at their mean per token position; `store` records a target's codes."""

    def hook(acts: torch.Tensor, hook) -> torch.Tensor:
        site = hook.name.rsplit(".", 1)[0]
        if store is not None:
            store[site] = acts
        if site not in keep:
            return acts
        mean = means[site].to(acts.dtype).to(acts.device)
        return torch.where(keep[site].to(acts.device), acts, mean.expand_as(acts))

    return hook


@torch.no_grad()
def faithfulness_curve(
    model,
    sites: list[SpliceSite],
    target: Target,
    batches: Iterable[ImageBatch],
    ranking: list[tuple[str, int]],
    mean_codes: dict[str, torch.Tensor],
    mean_errors: dict[str, torch.Tensor],
    aggregate: str,
    top_r: int,
    progress: bool = False,
) -> dict:
    """The recovery for each circuit size of `grid_sizes(len(ranking))`, errors kept and mean-ablated;
    the smallest measured sizes reaching 80% and 90%."""
    device = next(model.parameters()).device
    sizes = grid_sizes(len(ranking))
    variants = {"errors_kept": True, "errors_ablated": False}
    sums = {name: [0.0] * len(sizes) for name in variants}
    full = 0.0
    n_images = 0
    site_hooks = list(mean_codes)
    feature_hooks = [target.hook] if target.kind == "feature" else []
    for batch in tqdm(batches, desc="faithfulness", disable=not progress):
        pixels = batch.pixels_BCHW.to(device)
        codes: dict[str, torch.Tensor] = {}
        with spliced(model, sites, error_term=True):
            hooks = [(f"{h}.hook_sae_acts", _mean_ablating({}, {}, codes)) for h in feature_hooks]
            logits = model.run_with_hooks(pixels, fwd_hooks=hooks)
        full_B, chosen = target.scalar(logits, codes, aggregate, top_r)
        full += float(full_B.double().sum())
        for name, keep_errors in variants.items():
            for s, n in enumerate(sizes):
                keep = {h: torch.zeros(mean_codes[h].shape[-1], dtype=torch.bool) for h in site_hooks}
                for hook, feature in ranking[:n]:
                    keep[hook][feature] = True
                error_keep = {h: torch.tensor(keep_errors) for h in site_hooks}
                codes = {}
                hooks = [(f"{h}.hook_sae_acts", _mean_ablating(keep, mean_codes, None)) for h in site_hooks]
                hooks += [
                    (f"{h}.hook_sae_error", _mean_ablating(error_keep, mean_errors, None)) for h in site_hooks
                ]
                hooks += [(f"{h}.hook_sae_acts", _mean_ablating({}, {}, codes)) for h in feature_hooks]
                with spliced(model, sites, error_term=True):
                    logits = model.run_with_hooks(pixels, fwd_hooks=hooks)
                value_B, _ = target.scalar(logits, codes, aggregate, top_r, chosen)
                sums[name][s] += float(value_B.double().sum())
        n_images += len(pixels)
    m_full = full / n_images
    m_empty = sums["errors_ablated"][0] / n_images
    result: dict = {"sizes": sizes, "m_full": m_full, "m_empty": m_empty, "n_images": n_images}
    for name in variants:
        means = [value / n_images for value in sums[name]]
        denominator = m_full - m_empty
        recovery = [(m - m_empty) / denominator if denominator else None for m in means]
        result[name] = {"m": means, "recovery": recovery}
        for level in (0.8, 0.9):
            reached = [n for n, r in zip(sizes, recovery, strict=True) if r is not None and r >= level]
            result[name][f"n_{round(level * 100)}"] = reached[0] if reached else None
    return result
