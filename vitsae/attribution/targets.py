"""What an attribution explains: one scalar of the model per image, named by one `Target` type.

Spec strings (the `--target` flag):

- `class:C` the logit of class C, `prob:C` its softmax probability. C is a class name (from the image
  source), an index, `label` (each image's own label) or `pred` (each image's predicted class).
- `feature:F` SAE feature F at the SAE's hook, summed over the patch tokens; `feature:F@R,C` at the patch
  in row R, column C of the hook's grid.
- `neuron:HOOK:U` unit (channel) U of the hook's tokens, summed over patches; `neuron:HOOK:U@R,C` at one
  patch. A hook without a patch grid (a pooled vector) has one token, which is used as it is.

`TargetFunction` turns a target into `f(pixels_BCHW, classes_B) -> (B,)`, the form Captum attributes.
`classes_B` carries the per-image class of `class:`/`prob:` targets and is ignored by the others.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from vitsae.errors import VitsaeError
from vitsae.models.protocol import HookedModel
from vitsae.models.vit import HookedViT
from vitsae.sae.model import SparseAutoencoder
from vitsae.tokens import TokenLayout

TargetKind = Literal["class", "prob", "feature", "neuron"]
TARGET_SPECS = ("class:<name|index|label|pred>", "prob:<...>", "feature:<F>[@R,C]", "neuron:<hook>:<U>[@R,C]")
PER_IMAGE = ("label", "pred")


class TargetError(VitsaeError):
    """A target spec that does not parse, or names something the model or SAE lacks."""


@dataclass(frozen=True)
class Target:
    """One scalar of the model per image (see the module docstring for the spec strings)."""

    kind: TargetKind
    index: int | None = None  # class, SAE feature or unit index; None for per-image classes
    per_image: str = ""  # "label" or "pred" for class/prob targets naming no fixed class
    hook: str = ""  # feature/neuron targets: the hook read
    patch: tuple[int, int] | None = None  # (row, col) of one patch; None: summed over patches

    @classmethod
    def parse(cls, spec: str, class_names: Sequence[str] | None = None) -> Target:
        """Read a spec string; class names resolve against `class_names` (the source's classes)."""
        kind, sep, rest = spec.partition(":")
        if not sep or kind not in ("class", "prob", "feature", "neuron") or not rest:
            raise TargetError(f"bad target {spec!r}; use one of: {', '.join(TARGET_SPECS)}")
        if kind in ("class", "prob"):
            if rest in PER_IMAGE:
                return cls(kind, per_image=rest)
            if rest.isdigit():
                return cls(kind, index=int(rest))
            names = list(class_names or [])
            if rest not in names:
                known = ", ".join(names) if names else "(the source names no classes; use an index)"
                raise TargetError(f"target {spec!r}: no class {rest!r}; classes: {known}, or label, pred")
            return cls(kind, index=names.index(rest))
        body, _, where = rest.partition("@")
        patch = _parse_patch(spec, where) if where else None
        if kind == "feature":
            if not body.isdigit():
                raise TargetError(f"target {spec!r}: expected feature:<index>[@row,col]")
            return cls(kind, index=int(body), patch=patch)
        hook, colon, unit = body.rpartition(":")
        if not colon or not hook or not unit.isdigit():
            raise TargetError(f"target {spec!r}: expected neuron:<hook>:<unit>[@row,col]")
        return cls(kind, index=int(unit), hook=hook, patch=patch)

    def describe(self) -> str:
        """The spec string back (class names become indices)."""
        where = "" if self.patch is None else f"@{self.patch[0]},{self.patch[1]}"
        if self.kind in ("class", "prob"):
            return f"{self.kind}:{self.per_image or self.index}"
        if self.kind == "feature":
            return f"feature:{self.index}{where}"
        return f"neuron:{self.hook}:{self.index}{where}"

    @property
    def is_class(self) -> bool:
        return self.kind in ("class", "prob")


def _parse_patch(spec: str, where: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+),(\d+)", where)
    if match is None:
        raise TargetError(f"target {spec!r}: a patch is written @row,col (e.g. @3,4), got @{where}")
    return int(match.group(1)), int(match.group(2))


def check_image_size(model: HookedModel, image_hw: tuple[int, int]) -> None:
    """Raise a one-line error when `model` cannot take images of `image_hw`."""
    image_hw = (int(image_hw[0]), int(image_hw[1]))
    if isinstance(model, HookedViT):
        patch = model.cfg.patch_size
        if image_hw[0] % patch or image_hw[1] % patch:
            raise TargetError(
                f"image size {image_hw[0]}x{image_hw[1]} is not a multiple of the model's patch size "
                f"{patch}; resize to a multiple of {patch} (the model was trained at "
                f"{model.cfg.image_size[0]}x{model.cfg.image_size[1]})"
            )
        return
    try:
        model.probe_shapes(image_hw)
    except RuntimeError as err:
        size = model.preprocess.size
        raise TargetError(
            f"the model cannot take images of {image_hw[0]}x{image_hw[1]} ({str(err).splitlines()[0]}); "
            f"its preprocessing makes {size[0]}x{size[1]}"
        ) from err


class TargetFunction(torch.nn.Module):
    """`f(pixels_BCHW, classes_B) -> (B,)`: the target's scalar per image, differentiable in the pixels."""

    def __init__(
        self,
        model: HookedModel,
        target: Target,
        sae: SparseAutoencoder | None = None,
        image_hw: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.model, self.target, self.sae = model, target, sae
        self.image_hw = tuple(image_hw or model.preprocess.size)
        check_image_size(model, self.image_hw)
        if target.kind == "feature":
            if sae is None:
                raise TargetError(f"target {target.describe()!r} needs an SAE (--sae RUN_DIR)")
            hook = sae.cfg.hook_name
            if hook not in model.hook_names():
                raise TargetError(
                    f"the SAE was trained on hook {hook!r}, which this model lacks; pass the model the SAE "
                    f"was trained on ({sae.cfg.model_spec or 'its model_spec is not recorded'})"
                )
            self.hook = hook
            if not 0 <= target.index < sae.cfg.d_sae:
                raise TargetError(
                    f"feature {target.index} out of range: the SAE has {sae.cfg.d_sae} features"
                )
        elif target.kind == "neuron":
            hooks = model.hook_names()
            if target.hook not in hooks:
                raise TargetError(f"target hook {target.hook!r} not found; hooks: {', '.join(hooks)}")
            self.hook = target.hook
        else:
            self.hook = "hook_logits"
        self.layout: TokenLayout = model.token_layout(self.hook, self.image_hw)
        self._check_ranges()

    def _check_ranges(self) -> None:
        target, layout = self.target, self.layout
        if target.is_class:
            if layout.grid_hw is not None or layout.n_tokens != 1:
                raise TargetError("class targets need a model whose output is one vector of logits per image")
            if target.index is not None and not 0 <= target.index < layout.width:
                raise TargetError(
                    f"class {target.index} out of range: the model has {layout.width} outputs "
                    f"(classes 0-{layout.width - 1})"
                )
            return
        if target.kind == "neuron" and not 0 <= target.index < layout.width:
            raise TargetError(
                f"unit {target.index} out of range: hook {self.hook!r} has width {layout.width}"
            )
        if target.kind == "feature" and layout.width != self.sae.cfg.d_in:
            raise TargetError(
                f"the SAE reads width {self.sae.cfg.d_in}, but hook {self.hook!r} has width {layout.width}"
            )
        if target.patch is not None:
            if layout.grid_hw is None:
                raise TargetError(f"hook {self.hook!r} has no patch grid, so a target cannot name a patch")
            row, col = target.patch
            if not (0 <= row < layout.grid_hw[0] and 0 <= col < layout.grid_hw[1]):
                raise TargetError(
                    f"patch {row},{col} is outside the {layout.grid_hw[0]}x{layout.grid_hw[1]} grid of "
                    f"hook {self.hook!r}"
                )

    def classes_for(self, pixels_BCHW: torch.Tensor, labels_B: torch.Tensor) -> torch.Tensor:
        """The class each image's target reads: fixed, its label, or its prediction (int64, (B,))."""
        batch = pixels_BCHW.shape[0]
        target = self.target
        if not target.is_class:
            return torch.zeros(batch, dtype=torch.int64)
        if target.index is not None:
            return torch.full((batch,), target.index, dtype=torch.int64)
        if target.per_image == "label":
            if bool((labels_B < 0).any()):
                raise TargetError("target class:label needs labelled images; this source has unlabelled ones")
            return labels_B.to(torch.int64)
        with torch.no_grad():
            return self.model(pixels_BCHW).argmax(dim=-1).to(torch.int64).cpu()

    def forward(self, pixels_BCHW: torch.Tensor, classes_B: torch.Tensor) -> torch.Tensor:
        target = self.target
        if target.is_class:
            logits_BC = self.model(pixels_BCHW)
            if target.kind == "prob":
                logits_BC = logits_BC.softmax(dim=-1)
            return logits_BC.gather(1, classes_B.to(logits_BC.device).view(-1, 1)).squeeze(1)
        tokens_BTD = self.model.capture(pixels_BCHW, [self.hook])[self.hook]
        layout = self.layout
        if layout.grid_hw is not None:
            tokens_BTD = tokens_BTD[:, layout.n_prefix :]
            if target.patch is not None:
                row, col = target.patch
                index = row * layout.grid_hw[1] + col
                tokens_BTD = tokens_BTD[:, index : index + 1]
        if target.kind == "neuron":
            return tokens_BTD[..., target.index].sum(dim=1)
        batch, n_tokens, width = tokens_BTD.shape
        codes_NF = self.sae.encode(tokens_BTD.reshape(batch * n_tokens, width))
        return codes_NF[:, target.index].reshape(batch, n_tokens).sum(dim=1)
