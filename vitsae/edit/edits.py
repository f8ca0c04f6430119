"""Feature edits: frozen, JSON-serialisable descriptions of what to do to an SAE's feature activations.

An edit changes the activations a_f of some features at some tokens; the spliced model then writes
x' = x + decode(edited codes) - decode(original codes) back into the hook (delta semantics: the SAE's own
reconstruction error cancels, and an edit that changes no activation changes nothing, bit for bit).

- `ablate`: a_f <- 0.
- `clamp`: a_f <- value (everywhere selected, or with `only_firing` only where a_f != 0).
- `scale`: a_f <- value * a_f.
- `steer`: a_f <- a_f + value, whether f fires or not: adds value * W_dec[f] (in the SAE's units).
- `patch`: a_f <- the activation of f at the same token of a donor image.

`value` is in activation units (`unit="absolute"`), or a multiple of the feature's largest activation
(`unit="max"`) or of a quantile of its firing activations (`unit="quantile"`, `quantile` in (0, 1)) as
recorded by `vitsae stats` (see `vitsae.edit.units`). Edits listed together compose in order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from vitsae.config import config_from_dict, config_to_dict
from vitsae.edit.where import SelectionError, parse_kinds
from vitsae.errors import VitsaeError

Op = Literal["ablate", "clamp", "scale", "steer", "patch"]
OPS: tuple[str, ...] = ("ablate", "clamp", "scale", "steer", "patch")
Unit = Literal["absolute", "max", "quantile"]
UNITS: tuple[str, ...] = ("absolute", "max", "quantile")


class EditError(VitsaeError):
    """An edit that cannot be applied as described (unknown op, feature out of range, ...)."""


@dataclass(frozen=True)
class Where:
    """The tokens an edit applies to: token kinds (None: every token the SAE is spliced on), optionally
    narrowed to patches by a mask or a box.

    `patch_mask` is a grid_h x grid_w tuple of row tuples; `box` is (x0, y0, x1, y1) in the model's
    input pixels (patches whose centre is inside). Mask and box narrow the patch tokens only.
    """

    tokens: str | None = None
    patch_mask: tuple[tuple[bool, ...], ...] | None = None
    box: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        kinds = parse_kinds(self.tokens) if self.tokens is not None else frozenset({"patches"})
        if (self.patch_mask is not None or self.box is not None) and "patches" not in kinds:
            raise SelectionError(f"a patch mask or box needs patch tokens, but tokens={self.tokens!r}")
        if self.patch_mask is not None and self.box is not None:
            raise SelectionError("give a patch mask or a box, not both")

    @property
    def kinds(self) -> frozenset[str] | None:
        return None if self.tokens is None else parse_kinds(self.tokens)


@dataclass(frozen=True)
class FeatureEdit:
    """One edit of `features` of the SAE spliced at `hook_name` ("" when only one SAE is spliced)."""

    op: Op
    features: tuple[int, ...]
    value: float = 0.0
    unit: Unit = "absolute"
    quantile: float = 0.99
    only_firing: bool = False
    where: Where = field(default_factory=Where)  # a dict is read as a Where
    hook_name: str = ""
    donor: int | None = None  # patch: which image of the donor batch (None: the same index as each image)

    def __post_init__(self) -> None:
        if isinstance(self.where, dict):
            object.__setattr__(self, "where", config_from_dict(Where, self.where))
        object.__setattr__(self, "features", tuple(int(f) for f in self.features))
        if self.op not in OPS:
            raise EditError(f"unknown edit {self.op!r}; valid: {', '.join(OPS)}")
        if self.unit not in UNITS:
            raise EditError(f"unknown unit {self.unit!r}; valid: {', '.join(UNITS)}")
        if not self.features:
            raise EditError(f"a {self.op} edit needs at least one feature")
        if any(int(f) < 0 for f in self.features):
            raise EditError(f"feature indices must be >= 0, got {list(self.features)}")
        if len(set(self.features)) != len(self.features):
            raise EditError(f"feature {list(self.features)} listed twice in one edit")
        if self.unit == "quantile" and not 0.0 < self.quantile < 1.0:
            raise EditError(f"quantile must be in (0, 1), got {self.quantile}")
        if self.only_firing and self.op != "clamp":
            raise EditError("only_firing applies to clamp edits")

    def with_features(self, features: tuple[int, ...]) -> FeatureEdit:
        return replace(self, features=tuple(int(f) for f in features))

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureEdit:
        try:
            return config_from_dict(cls, data)
        except (TypeError, ValueError) as err:
            raise EditError(f"cannot read an edit from {json.dumps(data)}: {err}") from None

    def new_values(
        self,
        old_BTE: torch.Tensor,
        applies_BT: torch.Tensor,
        scale_E: torch.Tensor,
        donor_BTE: torch.Tensor | None,
    ) -> torch.Tensor:
        """The edited activations of this edit's features (E of them) at every token.

        `applies_BT` marks where the edit applies; `scale_E` turns `value` into activation units.
        """
        applies = applies_BT[..., None]
        target = (self.value * scale_E).to(old_BTE.dtype)
        if self.op == "ablate":
            new = torch.zeros_like(old_BTE)
        elif self.op == "clamp":
            new = target.expand_as(old_BTE)
            if self.only_firing:
                applies = applies & (old_BTE != 0)
        elif self.op == "scale":
            new = old_BTE * self.value
        elif self.op == "steer":
            new = old_BTE + target
        else:
            if donor_BTE is None:
                raise EditError("a patch edit needs donor images (donor_pixels)")
            new = donor_BTE.to(old_BTE.dtype).expand_as(old_BTE)
        return torch.where(applies, new, old_BTE)


def edits_to_json(edits: list[FeatureEdit] | tuple[FeatureEdit, ...]) -> list[dict[str, Any]]:
    return [edit.to_dict() for edit in edits]


def edits_from_json(data: list[dict[str, Any]]) -> list[FeatureEdit]:
    return [FeatureEdit.from_dict(item) for item in data]
