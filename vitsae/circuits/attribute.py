"""Attribution through the spliced model: edge(i -> t) = a_i * d(t)/d(a_i), summed over i's tokens.

Every SAE runs spliced with its error term (`vitsae.edit.spliced`), so the forward is the model's own;
the codes and the (detached) error terms are read at their hook points and made part of the autograd graph,
so an error node gets e . d(t)/d(e) like a feature. Between two adjacent columns the gradient is the model's
own; through a later SAE it passes its encoder and decoder with that SAE's error held (error nodes).

With `steps >= 1`, feature attributions are integrated gradients along the source site's codes: the codes of
that site scaled by alpha (its error term held), a_i times the mean gradient at the `steps` midpoints alpha
= (k + 1/2) / steps, so the attributions of a site sum to t(a) - t(codes zeroed) up to the Riemann error
when no later SAE is spliced (a later SAE's error term is recomputed along the path but its gradient is held
at zero, and a TopK code can jump). Error nodes keep the linear estimate. Captum's LayerIntegratedGradients
is not used: the path runs through a hook point the splice calls only when a TransformerLens hook is on it,
the target is read from other hook points of the same forward, and one interpolated forward serves every
target of a column.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from vitsae.circuits.target import Target
from vitsae.data.loader import ImageBatch
from vitsae.edit.splice import SpliceSite, spliced


@dataclass
class Forward:
    """One spliced forward with gradients: output, and per site hook its codes [B, T, F] and error [B, T, D]
    (leaves or graph tensors whose gradients can be taken), and the unscaled codes of a scaled site."""

    logits: torch.Tensor
    codes: dict[str, torch.Tensor]
    errors: dict[str, torch.Tensor]
    original: dict[str, torch.Tensor] = field(default_factory=dict)


def spliced_forward(
    model, sites: list[SpliceSite], pixels: torch.Tensor, scale: tuple[str, float] | None = None
) -> Forward:
    """Run `pixels` with every site spliced (error terms kept), recording codes and errors; with
    `scale=(hook, alpha)` that site's codes are alpha * codes (a leaf: no gradient flows upstream of it)."""
    codes: dict[str, torch.Tensor] = {}
    errors: dict[str, torch.Tensor] = {}
    original: dict[str, torch.Tensor] = {}

    def keep(store: dict[str, torch.Tensor]):
        def hook(acts: torch.Tensor, hook) -> torch.Tensor:
            site = hook.name.rsplit(".", 1)[0]
            if scale is not None and store is codes and site == scale[0]:
                original[site] = acts.detach()
                acts = (acts.detach() * scale[1]).requires_grad_(True)
            elif not acts.requires_grad:
                acts = acts.detach().requires_grad_(True)
            store[site] = acts
            return acts

        return hook

    with torch.enable_grad(), spliced(model, sites, error_term=True) as splice:
        hooks = []
        for site in splice.sites.values():
            hooks += [(site.name("hook_sae_acts"), keep(codes)), (site.name("hook_sae_error"), keep(errors))]
        logits = model.run_with_hooks(pixels, fwd_hooks=hooks)
    return Forward(logits, codes, errors, original)


@dataclass
class NodeSums:
    """Sums over images of what the node pass measures, per source hook: attribution [F] of every feature
    and of the error node, activation summed over tokens [F], firing tokens [F], codes and errors summed
    per token position ([T, F], [T, D], for mean ablation), and the per-token attribution of one image."""

    attribution: dict[str, torch.Tensor] = field(default_factory=dict)
    error_attribution: dict[str, float] = field(default_factory=dict)
    activation: dict[str, torch.Tensor] = field(default_factory=dict)
    fires: dict[str, torch.Tensor] = field(default_factory=dict)
    codes_TF: dict[str, torch.Tensor] = field(default_factory=dict)
    errors_TD: dict[str, torch.Tensor] = field(default_factory=dict)
    patch_TF: dict[str, torch.Tensor] = field(default_factory=dict)
    target_sum: float = 0.0
    n_images: int = 0


def _add(sums: dict, key: str, value) -> None:
    sums[key] = sums.get(key, 0) + value


def node_pass(
    model,
    sites: list[SpliceSite],
    hooks: list[str],
    target: Target,
    batches: Iterable[ImageBatch],
    aggregate: str,
    top_r: int,
    steps: int = 0,
    patch_image: int = -1,
    progress: bool = False,
    total: int | None = None,
) -> NodeSums:
    """Every feature's (and error node's) attribution to `target` at the source `hooks`, summed over
    images."""
    device = next(model.parameters()).device
    sums = NodeSums()
    bar = tqdm(total=total, unit="img", desc="nodes", disable=not progress)
    for batch in batches:
        pixels = batch.pixels_BCHW.to(device)
        run = spliced_forward(model, sites, pixels)
        value_B, chosen = target.scalar(run.logits, run.codes, aggregate, top_r)
        leaves = [run.codes[h] for h in hooks] + [run.errors[h] for h in hooks]
        grads = torch.autograd.grad(value_B.sum(), leaves, allow_unused=True)
        local = patch_image - sums.n_images
        for h, g_codes, g_error in zip(hooks, grads[: len(hooks)], grads[len(hooks) :], strict=True):
            codes = run.codes[h].detach()
            error = run.errors[h].detach()
            per_token_BTF = codes * _zero_if_none(g_codes, codes)
            if not steps:
                _add(sums.attribution, h, per_token_BTF.sum((0, 1)).double().cpu())
            if 0 <= local < len(pixels):
                sums.patch_TF[h] = per_token_BTF[local].double().cpu()
            err = float((error * _zero_if_none(g_error, error)).sum())
            sums.error_attribution[h] = sums.error_attribution.get(h, 0.0) + err
            _add(sums.activation, h, codes.sum((0, 1)).double().cpu())
            _add(sums.fires, h, (codes > 0).sum((0, 1)).cpu())
            _add(sums.codes_TF, h, codes.sum(0).double().cpu())
            _add(sums.errors_TD, h, error.sum(0).double().cpu())
        if steps:
            for h in hooks:
                _add(
                    sums.attribution,
                    h,
                    _integrated(model, sites, pixels, h, [target], steps, aggregate, top_r, [chosen])[0],
                )
        sums.target_sum += float(value_B.detach().double().sum())
        sums.n_images += len(pixels)
        bar.update(len(pixels))
    bar.close()
    return sums


def edge_pass(
    model,
    sites: list[SpliceSite],
    source_hook: str,
    targets: list[Target],
    batches: Iterable[ImageBatch],
    aggregate: str,
    top_r: int,
    steps: int = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Edges from every feature (and the error node) at `source_hook` into each of `targets`, summed over
    images: ([J, F] float64, error edges [J] float64, n_images). One forward per batch serves every target."""
    device = next(model.parameters()).device
    edges_JF: torch.Tensor | int = 0
    errors_J = torch.zeros(len(targets), dtype=torch.float64)
    n_images = 0
    for batch in tqdm(batches, desc=f"edges from {source_hook}", disable=not progress):
        pixels = batch.pixels_BCHW.to(device)
        run = spliced_forward(model, sites, pixels)
        codes, error = run.codes[source_hook], run.errors[source_hook]
        rows, chosen_all = [], []
        for j, target in enumerate(targets):
            value_B, chosen = target.scalar(run.logits, run.codes, aggregate, top_r)
            chosen_all.append(chosen)
            g_codes, g_error = torch.autograd.grad(
                value_B.sum(), [codes, error], retain_graph=True, allow_unused=True
            )
            rows.append((codes.detach() * _zero_if_none(g_codes, codes)).sum((0, 1)).double().cpu())
            errors_J[j] += float((error.detach() * _zero_if_none(g_error, error)).sum())
        batch_JF = torch.stack(rows)
        if steps:
            batch_JF = _integrated(
                model, sites, pixels, source_hook, targets, steps, aggregate, top_r, chosen_all
            )
        edges_JF = edges_JF + batch_JF
        n_images += len(pixels)
    return torch.as_tensor(edges_JF, dtype=torch.float64), errors_J, n_images


def _integrated(
    model,
    sites: list[SpliceSite],
    pixels: torch.Tensor,
    hook: str,
    targets: list[Target],
    steps: int,
    aggregate: str,
    top_r: int,
    chosen: list[torch.Tensor | None],
) -> torch.Tensor:
    """[J, F]: integrated gradients of each target along the codes of the site at `hook`, summed over
    this batch's images and tokens."""
    out_JF: torch.Tensor | int = 0
    for k in range(steps):
        run = spliced_forward(model, sites, pixels, scale=(hook, (k + 0.5) / steps))
        leaf, codes = run.codes[hook], run.original[hook]
        rows = []
        for target, chosen_BR in zip(targets, chosen, strict=True):
            value_B, _ = target.scalar(run.logits, run.codes, aggregate, top_r, chosen_BR)
            (grad,) = torch.autograd.grad(value_B.sum(), [leaf], retain_graph=True, allow_unused=True)
            rows.append((codes * _zero_if_none(grad, codes)).sum((0, 1)).double().cpu() / steps)
        out_JF = out_JF + torch.stack(rows)
    return torch.as_tensor(out_JF)


def _zero_if_none(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad
