"""What a visualisation maximises: scalars of the model at a site, one column per target.

An objective maps the captured activations of a batch to a `(B, N)` matrix: the value of each of its N
targets (SAE features, neurons, classes, directions) on each image. Optimising N targets in one batch puts
target `t` on the batch elements assigned to it; evaluating on real images fills every column, so the same
object scores the visualisations and the dataset images they are compared with.

SAE features are optimised through their pre-activation (`surrogate=True`): a TopK or ReLU code is exactly
zero, with zero gradient, on most images at the start, while its pre-activation always has a gradient and
rises with it. Reported values use the real activation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from vitsae.errors import VitsaeError
from vitsae.sae import SparseAutoencoder
from vitsae.tokens import TokenLayout

Reduce = Literal["mean", "max", "cls", "patch"]
REDUCTIONS: tuple[str, ...] = ("mean", "max", "cls", "patch")


class ObjectiveError(VitsaeError):
    """An objective that cannot be evaluated on this model: a site, index or token that does not exist."""


@dataclass(frozen=True)
class Site:
    """Where a value is read: a hook, and how its tokens are reduced to one number per image.

    `mean`/`max` run over the patch tokens (over every token when the hook has no patch grid), `cls` reads
    the first summary token, `patch` reads the patch at `patch_rc` = (row, col) of the grid.
    """

    hook: str
    reduce: Reduce = "mean"
    patch_rc: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if self.reduce not in REDUCTIONS:
            raise ObjectiveError(f"unknown reduction {self.reduce!r}; valid: {', '.join(REDUCTIONS)}")

    def reduce_tokens(self, values_BTN: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """(B, T, N) per-token values -> (B, N)."""
        if self.reduce == "cls":
            if layout.n_cls < 1:
                raise ObjectiveError(f"{self.hook} has no CLS token; use --reduce mean, max or patch")
            return values_BTN[:, 0]
        if self.reduce == "patch":
            if layout.grid_hw is None:
                raise ObjectiveError(f"{self.hook} has no patch grid; use --reduce mean, max or cls")
            row, col = self.patch_rc
            rows, cols = layout.grid_hw
            if not (0 <= row < rows and 0 <= col < cols):
                raise ObjectiveError(f"patch ({row}, {col}) is outside {self.hook}'s {rows}x{cols} grid")
            return values_BTN[:, layout.n_prefix + row * cols + col]
        patches = values_BTN if layout.grid_hw is None else values_BTN[:, layout.n_prefix :]
        return patches.mean(1) if self.reduce == "mean" else patches.amax(1)


class Objective(Protocol):
    """N scalar targets of the model; `values` is (B, N)."""

    @property
    def n_targets(self) -> int: ...

    def hooks(self) -> tuple[str, ...]: ...

    def values(
        self, acts: dict[str, torch.Tensor], layouts: dict[str, TokenLayout], surrogate: bool = False
    ) -> torch.Tensor: ...

    def select(self, targets: Sequence[int]) -> Objective: ...


def _check_indices(indices: tuple[int, ...], size: int, what: str) -> None:
    if not indices:
        raise ObjectiveError(f"no {what} given")
    bad = [i for i in indices if not 0 <= i < size]
    if bad:
        raise ObjectiveError(f"{what} {bad} out of range: valid indices are 0..{size - 1}")


class _AtSite:
    """Targets read per token at one site, then reduced over tokens as the site says."""

    site: Site

    def hooks(self) -> tuple[str, ...]:
        return (self.site.hook,)

    def values(self, acts, layouts, surrogate=False):
        return self.site.reduce_tokens(self.token_values(acts, surrogate), layouts[self.site.hook])


@dataclass(frozen=True, eq=False)
class SAEFeature(_AtSite):
    """SAE features read at the SAE's hook (the model's raw activations go in, as the SAE was trained)."""

    site: Site
    sae: SparseAutoencoder
    features: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_indices(self.features, self.sae.cfg.d_sae, "SAE feature")

    @property
    def n_targets(self) -> int:
        return len(self.features)

    def token_values(self, acts: dict[str, torch.Tensor], surrogate: bool = False) -> torch.Tensor:
        """(B, T, N): every token's value of every target."""
        tokens_BTD = acts[self.site.hook]
        B, T, D = tokens_BTD.shape
        if D != self.sae.cfg.d_in:
            raise ObjectiveError(
                f"{self.site.hook} has width {D} but the SAE expects d_in={self.sae.cfg.d_in}: "
                "is the SAE from another model or hook?"
            )
        index = torch.tensor(self.features, device=tokens_BTD.device)
        flat_ND = tokens_BTD.reshape(B * T, D)
        if surrogate:
            scale = self.sae.cfg.norm_scale or 1.0
            per_token = (flat_ND * scale - self.sae.b_dec) @ self.sae.W_enc[:, index] + self.sae.b_enc[index]
        else:
            per_token = self.sae.encode(flat_ND)[:, index]
        return per_token.reshape(B, T, -1)

    def select(self, targets):
        return dataclasses.replace(self, features=tuple(self.features[t] for t in targets))


@dataclass(frozen=True)
class Neuron(_AtSite):
    """Raw units of a hook: a ViT neuron or a CNN channel."""

    site: Site
    units: tuple[int, ...]

    @property
    def n_targets(self) -> int:
        return len(self.units)

    def token_values(self, acts: dict[str, torch.Tensor], surrogate: bool = False) -> torch.Tensor:
        """(B, T, N): every token's value of every unit."""
        tokens_BTD = acts[self.site.hook]
        _check_indices(self.units, tokens_BTD.shape[-1], f"unit of {self.site.hook}")
        return tokens_BTD[..., torch.tensor(self.units, device=tokens_BTD.device)]

    def select(self, targets):
        return dataclasses.replace(self, units=tuple(self.units[t] for t in targets))


@dataclass(frozen=True, eq=False)
class Direction(_AtSite):
    """Projections of a hook's tokens on directions (N, D), e.g. decoder rows: dot product or cosine."""

    site: Site
    directions_ND: torch.Tensor
    cosine: bool = False

    @property
    def n_targets(self) -> int:
        return self.directions_ND.shape[0]

    def token_values(self, acts: dict[str, torch.Tensor], surrogate: bool = False) -> torch.Tensor:
        """(B, T, N): every token's projection on every direction."""
        tokens_BTD = acts[self.site.hook]
        directions_ND = self.directions_ND.to(tokens_BTD)
        if directions_ND.shape[1] != tokens_BTD.shape[-1]:
            raise ObjectiveError(
                f"directions have width {directions_ND.shape[1]}, {self.site.hook} has {tokens_BTD.shape[-1]}"
            )
        if self.cosine:
            tokens_BTD = torch.nn.functional.normalize(tokens_BTD, dim=-1)
            directions_ND = torch.nn.functional.normalize(directions_ND, dim=-1)
        return tokens_BTD @ directions_ND.T

    def select(self, targets):
        return dataclasses.replace(self, directions_ND=self.directions_ND[list(targets)])


@dataclass(frozen=True)
class ClassLogit:
    """Output units of the model (`hook_logits`): class logits of a classifier."""

    classes: tuple[int, ...]

    @property
    def n_targets(self) -> int:
        return len(self.classes)

    def hooks(self) -> tuple[str, ...]:
        return ("hook_logits",)

    def values(self, acts, layouts, surrogate=False):
        logits_BTC = acts["hook_logits"]
        _check_indices(self.classes, logits_BTC.shape[-1], "class")
        return logits_BTC[:, 0, torch.tensor(self.classes, device=logits_BTC.device)]

    def select(self, targets):
        return dataclasses.replace(self, classes=tuple(self.classes[t] for t in targets))


TokenObjective = SAEFeature | Neuron | Direction


@dataclass(frozen=True, eq=False)
class DistributionMatch:
    """Match the sorted patch values of each target to a reference from real images (VITAL-style).

    Instead of pushing a target as high as it goes, the image is asked to produce the same distribution of
    values over its patches as the target's top real images do (the authors of VITAL, ICCV 2025, report more
    natural images on ViTs this way). The value is minus the mean squared difference of the sorted patch
    values; `reference_NP` holds, per target, the descending sorted values on real images (surrogate units).
    """

    base: TokenObjective
    reference_NP: torch.Tensor

    @property
    def n_targets(self) -> int:
        return self.base.n_targets

    def hooks(self) -> tuple[str, ...]:
        return self.base.hooks()

    def values(self, acts, layouts, surrogate=False):
        per_token_BTN = self.base.token_values(acts, surrogate=True)
        layout = layouts[self.base.site.hook]
        patches_BPN = per_token_BTN if layout.grid_hw is None else per_token_BTN[:, layout.n_prefix :]
        sorted_BNP = patches_BPN.transpose(1, 2).sort(dim=-1, descending=True).values
        if sorted_BNP.shape[-1] != self.reference_NP.shape[-1]:
            raise ObjectiveError(
                f"the reference has {self.reference_NP.shape[-1]} patches per image, the images "
                f"{sorted_BNP.shape[-1]}: measure it at the same image size"
            )
        return -(sorted_BNP - self.reference_NP.to(sorted_BNP)).pow(2).mean(-1)

    def select(self, targets):
        return DistributionMatch(self.base.select(targets), self.reference_NP[list(targets)])


@dataclass(frozen=True)
class Weighted:
    """A weighted sum of objectives, target by target (for contrasts: `a - b`, `a + 0.5 * b`)."""

    terms: tuple[tuple[float, Objective], ...]

    def __post_init__(self) -> None:
        sizes = {term.n_targets for _, term in self.terms}
        if len(sizes) != 1:
            raise ObjectiveError(
                f"objectives combined target by target need as many targets each; got {sizes}"
            )

    @property
    def n_targets(self) -> int:
        return self.terms[0][1].n_targets

    def hooks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(hook for _, term in self.terms for hook in term.hooks()))

    def values(self, acts, layouts, surrogate=False):
        return sum(weight * term.values(acts, layouts, surrogate) for weight, term in self.terms)

    def select(self, targets):
        return Weighted(tuple((weight, term.select(targets)) for weight, term in self.terms))


def combine(*terms: tuple[float, Objective]) -> Weighted:
    """`combine((1, a), (-1, b))`: the objective a - b."""
    return Weighted(tuple(terms))


def diversity_B(acts_BTD: torch.Tensor, group_size: int) -> torch.Tensor:
    """Minus the mean cosine similarity of each image's Gram matrix to the others of its group.

    Lucid's diversity term: batch elements that optimise the same target are pushed towards different
    facets by making their activation correlations (Gram matrices over tokens) dissimilar. Returns one value
    per batch element; 0 for groups of one.
    """
    B = acts_BTD.shape[0]
    if group_size < 2:
        return acts_BTD.new_zeros(B)
    gram_BDD = acts_BTD.transpose(1, 2) @ acts_BTD / acts_BTD.shape[1]
    flat_BX = torch.nn.functional.normalize(gram_BDD.flatten(1), dim=1)
    groups = flat_BX.reshape(B // group_size, group_size, -1)
    cosine_GSS = groups @ groups.transpose(1, 2)
    others = (cosine_GSS.sum(-1) - 1.0) / (group_size - 1)
    return -others.reshape(B)
