"""Splice SAEs into a hooked model for the duration of a block, with hooks (the model is not modified).

    with spliced(model, [SpliceSite(sae)], error_term=True, edits=[...]) as splice:
        logits = model(pixels)                       # every site's selected tokens go through its SAE
        logits, cache = model.run_with_cache(pixels) # cache["blocks.2.hook_resid_post.hook_sae_acts"], ...

At each site's hook the activations are read as tokens (`model.to_tokens`), the SAE's tokens (its
`tokens` kinds: cls, registers, patches) are replaced by x_hat = decode(encode(x)) (raw units), plus
the error term x - x_hat when `error_term`: computed from the unedited codes and detached, so the
output equals the unspliced model's to rounding while edits and gradients act on the codes. Other
tokens pass unchanged. Each site adds three hook points, listed in `model.hook_dict` inside the block:

- `<hook>.hook_sae_acts`: codes [B, T_sel, F] (after edits), dense;
- `<hook>.hook_sae_recons`: the reconstruction [B, T_sel, D] (after edits);
- `<hook>.hook_sae_error`: the detached error term [B, T_sel, D] (only with `error_term`).

Codes are dense when something needs them (gradients enabled, a hook on `hook_sae_acts`) or the SAE's
backend resolves to dense; otherwise the SAE's sparse encode/decode runs and edits are added as a delta
(new - old) @ W_dec[E] over the edited features E only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformer_lens.hook_points import HookPoint

from vitsae.edit.edits import EditError, FeatureEdit
from vitsae.edit.units import feature_scales
from vitsae.edit.where import SelectionError, box_patch_mask, kinds_name, parse_kinds, token_kind_mask
from vitsae.errors import VitsaeError
from vitsae.fileio import read_json
from vitsae.kernels.codes import SparseCodes
from vitsae.sae.model import SparseAutoencoder
from vitsae.tokens import TokenLayout

SAE_HOOKS = ("hook_sae_acts", "hook_sae_recons", "hook_sae_error")


class SpliceError(VitsaeError):
    """An SAE that cannot be spliced into this model (hook missing, width mismatch, ...)."""


@dataclass
class SpliceSite:
    """One SAE to splice: at `hook_name` (default: the hook it was trained on), on `tokens` kinds
    (default: the kinds of its training store, else all). `stats_dir` (a `vitsae stats` output) lets
    edits use max/quantile units; `directions` replaces decoder rows in edit deltas (a control)."""

    sae: SparseAutoencoder
    hook_name: str = ""
    tokens: str | None = None
    stats_dir: Path | None = None
    directions: dict[int, torch.Tensor] | None = None


def trained_kinds(sae: SparseAutoencoder) -> frozenset[str] | None:
    """The token kinds of the store the SAE was trained on (its manifest's selection), or None if unknown."""
    manifest = Path(sae.cfg.store) / "manifest.json" if sae.cfg.store else None
    if manifest is None or not manifest.is_file():
        return None
    tokens = read_json(manifest).get("tokens", {})
    selection = tokens.get("selection")
    if selection == "all":
        return frozenset({"cls", "patches"} | ({"registers"} if tokens.get("include_registers") else set()))
    if selection in ("cls", "patches"):
        return frozenset({selection})
    return None


@dataclass
class ActiveSite:
    """A site while spliced: its hook points, edits and what the last forward passes recorded.

    `changed_B`: per image of the last forward, whether an edit changed any activation. `fire_counts_F`:
    tokens each feature fired on, summed over forwards (when counting).
    """

    hook_name: str
    sae: SparseAutoencoder
    layout: TokenLayout
    kinds: frozenset[str]
    edits: list[FeatureEdit]
    scales: list[torch.Tensor]
    features_E: torch.Tensor
    directions_ED: torch.Tensor | None
    hook_points: dict[str, HookPoint]
    donor_BTE: torch.Tensor | None = None
    changed_B: torch.Tensor | None = None
    fire_counts_F: torch.Tensor | None = None
    _masks: dict[int, torch.Tensor] = field(default_factory=dict)

    def name(self, point: str) -> str:
        return f"{self.hook_name}.{point}"

    def token_mask(self, n_tokens: int) -> torch.Tensor:
        if n_tokens not in self._masks:
            self._masks[n_tokens] = token_kind_mask(self.layout, n_tokens, self.kinds)
        return self._masks[n_tokens]

    def edit_mask(self, edit: FeatureEdit, n_tokens: int, image_hw: tuple[int, int]) -> torch.Tensor:
        """Bool [T_sel]: where `edit` applies among this site's selected tokens."""
        kinds = self.kinds if edit.where.tokens is None else edit.where.kinds
        mask = token_kind_mask(self.layout, n_tokens, kinds)
        if edit.where.patch_mask is not None or edit.where.box is not None:
            if edit.where.box is not None:
                grid = box_patch_mask(self.layout, edit.where.box, image_hw)
            else:
                grid = torch.tensor(edit.where.patch_mask, dtype=torch.bool)
            n_grid = n_tokens - self.layout.n_prefix
            if grid.numel() != n_grid or (self.layout.grid_hw and tuple(grid.shape) != self.layout.grid_hw):
                raise SelectionError(
                    f"patch mask of shape {tuple(grid.shape)} does not match the {self.layout.grid_hw} "
                    f"patch grid of {self.hook_name}"
                )
            mask[self.layout.n_prefix :] &= grid.flatten()
        return mask[self.token_mask(n_tokens)]


@dataclass
class Splice:
    """What `spliced` yields: the active sites, by hook name."""

    sites: dict[str, ActiveSite]

    @property
    def hook_point_names(self) -> list[str]:
        return [name for site in self.sites.values() for name in (site.name(p) for p in SAE_HOOKS)]

    def changed_B(self) -> torch.Tensor | None:
        """Per image of the last forward: whether an edit changed an activation at any site."""
        flags = [site.changed_B for site in self.sites.values() if site.changed_B is not None]
        if not flags:
            return None
        return torch.stack(flags).any(0)


def _resolve_site(model, site: SpliceSite) -> tuple[str, TokenLayout, frozenset[str]]:
    sae = site.sae
    hook = site.hook_name or sae.cfg.hook_name
    if not hook:
        raise SpliceError("the SAE records no hook_name; give SpliceSite(hook_name=...)")
    valid = model.hook_names()
    if hook not in valid:
        raise SpliceError(
            f"the model has no hook {hook!r} (the SAE's hook); valid hooks: {', '.join(valid[:40])}"
            + (" ..." if len(valid) > 40 else "")
        )
    layout = model.token_layout(hook)
    if layout.width != sae.cfg.d_in:
        raise SpliceError(
            f"SAE width d_in={sae.cfg.d_in} does not match hook {hook!r} of width {layout.width} "
            "on this model"
        )
    trained = trained_kinds(sae)
    if site.tokens is None:
        kinds = trained or parse_kinds("all")
    else:
        kinds = parse_kinds(site.tokens)
        if trained is not None and not kinds <= trained:
            raise SelectionError(
                f"tokens {kinds_name(kinds)!r} include kinds the SAE at {hook!r} was not trained on "
                f"(its store kept {kinds_name(trained)!r})"
            )
    present = token_kind_mask(layout, layout.n_tokens, kinds)
    if not present.any():
        raise SelectionError(f"tokens {kinds_name(kinds)!r} select no token of hook {hook!r} ({layout})")
    return hook, layout, kinds


def _site_edits(edits: Sequence[FeatureEdit], hooks: list[str]) -> dict[str, list[FeatureEdit]]:
    by_hook: dict[str, list[FeatureEdit]] = {hook: [] for hook in hooks}
    for edit in edits:
        hook = edit.hook_name
        if not hook:
            if len(hooks) != 1:
                raise EditError(
                    f"{len(hooks)} SAEs are spliced ({', '.join(hooks)}): give each edit its hook_name"
                )
            hook = hooks[0]
        if hook not in by_hook:
            raise EditError(f"edit on hook {hook!r}, where no SAE is spliced (spliced: {', '.join(hooks)})")
        by_hook[hook].append(edit)
    return by_hook


def _build_site(
    model, site: SpliceSite, hook: str, layout: TokenLayout, kinds, edits: list[FeatureEdit]
) -> ActiveSite:
    sae = site.sae
    n_features = sae.cfg.d_sae
    for edit in edits:
        if edit.where.tokens is not None and not edit.where.kinds <= kinds:
            raise SelectionError(
                f"edit {edit.op} on tokens {edit.where.tokens!r}, but the SAE at {hook!r} is spliced on "
                f"{kinds_name(kinds)!r} only (the kinds it was trained on)"
            )
        if (
            edit.where.tokens is not None
            and not token_kind_mask(layout, layout.n_tokens, edit.where.kinds).any()
        ):
            raise SelectionError(
                f"edit {edit.op} on tokens {edit.where.tokens!r} selects no token of hook {hook!r} "
                f"({layout.n_cls} class, {layout.n_registers} register tokens, patch grid {layout.grid_hw})"
            )
        out_of_range = [f for f in edit.features if f >= n_features]
        if out_of_range:
            raise EditError(f"feature(s) {out_of_range} out of range: the SAE at {hook!r} has {n_features}")
    union: list[int] = []
    for edit in edits:
        union.extend(f for f in edit.features if f not in union)
    features_E = torch.tensor(union, dtype=torch.long, device=sae.W_dec.device)
    scales = [feature_scales(edit, site.stats_dir, n_features).to(sae.W_dec.device) for edit in edits]
    directions = None
    if site.directions is not None and union:
        missing = [f for f in union if f not in site.directions]
        if missing:
            raise EditError(f"directions given for the site {hook!r} lack features {missing}")
        directions = torch.stack([site.directions[f].to(sae.W_dec) for f in union])
    points = {}
    for point in SAE_HOOKS:
        hook_point = HookPoint()
        hook_point.name = f"{hook}.{point}"
        points[point] = hook_point
    return ActiveSite(hook, sae, layout, kinds, edits, scales, features_E, directions, points)


def _donor_codes(model, active: list[ActiveSite], donor_pixels: torch.Tensor) -> None:
    """Each site's donor activations [B_donor, T_sel, E] of its edited features, from the unspliced model."""
    hooks = [site.hook_name for site in active if any(e.op == "patch" for e in site.edits)]
    if not hooks:
        return
    tokens = model.collect(donor_pixels, hooks)
    for site in active:
        if site.hook_name not in tokens:
            continue
        x_BTD = tokens[site.hook_name]
        x_BTD = x_BTD[:, site.token_mask(x_BTD.shape[1]).to(x_BTD.device)]
        with torch.no_grad():
            codes = site.sae.encode(x_BTD.reshape(-1, x_BTD.shape[-1]))
        site.donor_BTE = codes[:, site.features_E].reshape(*x_BTD.shape[:2], -1)


@contextlib.contextmanager
def spliced(
    model,
    sites: Sequence[SpliceSite | SparseAutoencoder],
    error_term: bool = True,
    edits: Sequence[FeatureEdit] = (),
    donor_pixels: torch.Tensor | None = None,
    count_fires: bool = False,
) -> Iterator[Splice]:
    """Splice each site's SAE into `model` for the block (see the module docstring).

    `edits` (each naming its site's hook, or "" with one site) change the codes on the way; patch edits
    take their values from `donor_pixels`. With `count_fires`, each site sums how many selected tokens
    every feature fired on into `fire_counts_F`. The model's modules and weights are never changed; its
    `hook_dict`/`mod_dict` list the SAE hook points inside the block only.
    """
    site_list = [s if isinstance(s, SpliceSite) else SpliceSite(s) for s in sites]
    if not site_list:
        raise SpliceError("no SAE to splice")
    resolved = [_resolve_site(model, site) for site in site_list]
    hooks = [hook for hook, _, _ in resolved]
    doubled = sorted({h for h in hooks if hooks.count(h) > 1})
    if doubled:
        raise SpliceError(f"two SAEs at the same hook {', '.join(doubled)}: splice one SAE per hook")
    by_hook = _site_edits(edits, hooks)
    active = [
        _build_site(model, site, hook, layout, kinds, by_hook[hook])
        for site, (hook, layout, kinds) in zip(site_list, resolved, strict=True)
    ]
    if any(e.op == "patch" for e in edits):
        if donor_pixels is None:
            raise EditError("patch edits need donor images: pass donor_pixels")
        _donor_codes(model, active, donor_pixels)
    for site in active:
        if count_fires:
            site.fire_counts_F = torch.zeros(site.sae.cfg.d_sae, dtype=torch.long)
    modes = {site.sae: site.sae.training for site in active}
    for sae in modes:
        sae.eval()
    added = {}
    for site in active:
        for hook_point in site.hook_points.values():
            added[hook_point.name] = hook_point
    model.hook_dict.update(added)
    model.mod_dict.update(added)
    state = {"image_hw": None}

    def remember_size(module, args):
        pixels = args[0] if args else None
        if isinstance(pixels, torch.Tensor) and pixels.ndim == 4:
            state["image_hw"] = tuple(pixels.shape[-2:])

    size_handle = model.register_forward_pre_hook(remember_size)
    try:
        fwd_hooks = [(site.hook_name, _splice_hook(model, site, error_term, state)) for site in active]
        with model.hooks(fwd_hooks=fwd_hooks):
            yield Splice({site.hook_name: site for site in active})
    finally:
        size_handle.remove()
        for name in added:
            model.hook_dict.pop(name, None)
            model.mod_dict.pop(name, None)
        for sae, mode in modes.items():
            sae.train(mode)


def _old_values(codes: SparseCodes, features_E: torch.Tensor) -> torch.Tensor:
    """[N, E] activations of the features E, gathered from sparse codes."""
    match_NKE = codes.indices_BK.long()[..., None] == features_E
    return (codes.values_BK[..., None] * match_NKE).sum(1)


def _edited(site: ActiveSite, old_NE: torch.Tensor, batch: int, n_tokens: int, image_hw) -> torch.Tensor:
    """The activations of the edited features after every edit of the site, in order ([N, E])."""
    n_sel = old_NE.shape[0] // batch
    cur_BTE = old_NE.reshape(batch, n_sel, -1)
    union = site.features_E.tolist()
    for edit, scale_E in zip(site.edits, site.scales, strict=True):
        cols = torch.tensor([union.index(f) for f in edit.features], device=old_NE.device)
        applies_BT = site.edit_mask(edit, n_tokens, image_hw).to(old_NE.device).expand(batch, -1)
        donor = None
        if site.donor_BTE is not None:
            donor_all = site.donor_BTE[:, :, cols]
            if edit.donor is not None:
                donor = donor_all[edit.donor : edit.donor + 1]
            elif donor_all.shape[0] == batch:
                donor = donor_all
            else:
                raise EditError(
                    f"{donor_all.shape[0]} donor images for a batch of {batch}: give the edit a donor index"
                )
        new = edit.new_values(cur_BTE[..., cols], applies_BT, scale_E, donor)
        cur_BTE = cur_BTE.index_copy(-1, cols, new)
    return cur_BTE.reshape(old_NE.shape)


def _splice_hook(model, site: ActiveSite, error_term: bool, state: dict):
    sae = site.sae
    points = site.hook_points
    norm_scale = sae.cfg.norm_scale or 1.0

    def hook(acts: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        tokens_BTD = model.to_tokens(site.hook_name, acts)
        batch, n_tokens, width = tokens_BTD.shape
        mask_T = site.token_mask(n_tokens).to(tokens_BTD.device)
        every = bool(mask_T.all())
        x_BSD = tokens_BTD if every else tokens_BTD[:, mask_T]
        x_ND = x_BSD.reshape(-1, width)
        image_hw = state["image_hw"] or tuple(model.preprocess.size)
        edits = bool(site.edits)
        dense = (
            torch.is_grad_enabled()
            or points["hook_sae_acts"].has_hooks(dir="fwd")
            or sae.cfg.resolved_backend == "dense"
        )
        old_NE = new_NE = None
        if dense:
            codes_NF = sae.encode(x_ND)
            recon_orig = sae.decode(codes_NF)
            edited_NF = codes_NF
            if edits:
                old_NE = codes_NF[:, site.features_E]
                new_NE = _edited(site, old_NE, batch, n_tokens, image_hw)
                edited_NF = codes_NF.index_copy(1, site.features_E, new_NE)
            if points["hook_sae_acts"].has_hooks(dir="fwd"):
                hooked = points["hook_sae_acts"](edited_NF.reshape(batch, -1, edited_NF.shape[-1]))
                edited_NF = hooked.reshape(edited_NF.shape)
            recon_ND = recon_orig if edited_NF is codes_NF else sae.decode(edited_NF)
            if edits and site.directions_ED is not None:
                swap_ED = site.directions_ED - sae.W_dec[site.features_E]
                recon_ND = recon_ND + (new_NE - old_NE) @ swap_ED / norm_scale
            fired_F = (codes_NF != 0).sum(0) if site.fire_counts_F is not None else None
        else:
            codes = sae.encode_sparse(x_ND)
            recon_orig = sae.decode_sparse(codes)
            recon_ND = recon_orig
            if edits:
                old_NE = _old_values(codes, site.features_E)
                new_NE = _edited(site, old_NE, batch, n_tokens, image_hw)
                rows_ED = site.directions_ED if site.directions_ED is not None else sae.W_dec[site.features_E]
                recon_ND = recon_ND + (new_NE - old_NE) @ rows_ED / norm_scale
            fired_F = None
            if site.fire_counts_F is not None:
                active = codes.values_BK != 0
                fired_F = torch.bincount(codes.indices_BK[active].long(), minlength=sae.cfg.d_sae)
        if fired_F is not None:
            site.fire_counts_F += fired_F.cpu()
        if edits:
            site.changed_B = (new_NE != old_NE).reshape(batch, -1).any(1).detach().cpu()
        recon_BSD = points["hook_sae_recons"](recon_ND.to(x_BSD.dtype).reshape(x_BSD.shape))
        out_BSD = recon_BSD
        if error_term:
            error_BSD = (x_BSD - recon_orig.to(x_BSD.dtype).reshape(x_BSD.shape)).detach()
            out_BSD = recon_BSD + points["hook_sae_error"](error_BSD)
        if every:
            spliced_BTD = out_BSD
        else:
            index = mask_T.nonzero().squeeze(1)
            spliced_BTD = tokens_BTD.index_copy(1, index, out_BSD.to(tokens_BTD.dtype))
        return model.from_tokens(site.hook_name, spliced_BTD, tuple(acts.shape))

    return hook
