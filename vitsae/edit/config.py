"""EditConfig: everything `vitsae edit` needs, and the parsing of its edit flags into `FeatureEdit`s."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vitsae.edit.edits import UNITS, EditError, FeatureEdit, Where
from vitsae.errors import VitsaeError
from vitsae.sae.provenance import ALLOW_HELP


@dataclass(frozen=True)
class EditConfig:
    """Options of one `vitsae edit` run: model, SAEs, images, the edit (or --explain), where and how."""

    model: str = field(
        metadata={"help": "model spec: hf:<dir>, timm:<dir>, vitsae:<name>, module:<path:factory>"}
    )
    sae: tuple[str, ...] = field(metadata={"help": "trained SAE folder(s); repeat --sae for several hooks"})
    source: str = field(metadata={"help": "images: a folder, hf:<dir>[@split], or shapes:<n>[:seed[:size]]"})
    out: Path = field(metadata={"help": "output folder for edit.json and before_after.png"})
    ablate: str = field(default="", metadata={"help": "features to ablate: F[,F...]"})
    clamp: str = field(default="", metadata={"help": "features to clamp: F=V[,F=V...]"})
    scale: str = field(default="", metadata={"help": "features to scale: F=S[,F=S...]"})
    steer: str = field(
        default="", metadata={"help": "features to steer (add alpha * W_dec[f]): F=A[,F=A...]"}
    )
    patch: str = field(default="", metadata={"help": "features to patch from the --donor image: F[,F...]"})
    donor: int = field(default=-1, metadata={"help": "source index of the donor image for --patch"})
    hook: str = field(
        default="", metadata={"help": "hook of the SAE the edit applies to (default: the first)"}
    )
    tokens: str = field(
        default="",
        metadata={"help": "where the edit applies: patches, cls, registers, all (default: the SAE's)"},
    )
    box: tuple[float, ...] = field(
        default=(), metadata={"help": "only patches whose centre is in this box: X0 Y0 X1 Y1 (input pixels)"}
    )
    unit: Literal["absolute", "max", "quantile"] = field(
        default="absolute",
        metadata={"help": "clamp/steer values in activation units, or x the feature's max/quantile"},
    )
    quantile: float = field(default=0.99, metadata={"help": "the quantile of --unit quantile"})
    only_firing: bool = field(default=False, metadata={"help": "clamp only where the feature already fires"})
    stats: tuple[str, ...] = field(
        default=(),
        metadata={"help": "`vitsae stats` folder of each --sae, in order (for --unit max/quantile)"},
    )
    explain: str = field(
        default="",
        metadata={"help": "instead of an edit: rank the features driving this class (name or index)"},
    )
    top: int = field(default=10, metadata={"help": "--explain: features listed"})
    confirm: int = field(default=5, metadata={"help": "--explain: top features confirmed by exact ablation"})
    only_class: str = field(default="", metadata={"help": "use only the images labelled with this class"})
    images: int = field(default=256, metadata={"help": "images to run (after --only-class filtering)"})
    batch_size: int = field(default=32, metadata={"help": "images per forward pass"})
    controls: bool = field(
        default=True, metadata={"help": "run the random-feature and random-direction controls"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the controls"})
    device: str = field(default="cpu", metadata={"help": "torch device"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    allow_other_model: bool = field(default=False, metadata={"help": ALLOW_HELP})

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise EditError(f"unknown unit {self.unit!r}; valid: {', '.join(UNITS)}")
        if self.box and len(self.box) != 4:
            raise EditError(f"--box takes 4 numbers X0 Y0 X1 Y1, got {list(self.box)}")
        if self.images < 1 or self.batch_size < 1:
            raise VitsaeError(f"--images and --batch-size must be >= 1, got {self.images}, {self.batch_size}")
        if self.stats and len(self.stats) != len(self.sae):
            raise EditError(
                f"{len(self.stats)} --stats folders for {len(self.sae)} --sae folders: give one per SAE"
            )
        n_edits = sum(bool(x) for x in (self.ablate, self.clamp, self.scale, self.steer, self.patch))
        if self.explain and n_edits:
            raise EditError(
                "--explain ranks features; give it without --ablate/--clamp/--scale/--steer/--patch"
            )
        if not self.explain and not n_edits:
            raise EditError(
                "nothing to do: give --ablate, --clamp, --scale, --steer, --patch or --explain CLASS"
            )
        if self.patch and self.donor < 0:
            raise EditError("--patch needs --donor INDEX, the source image to take the feature values from")

    def edits(self) -> list[FeatureEdit]:
        """The edits the flags describe, in the order ablate, clamp, scale, steer, patch."""
        where = Where(self.tokens or None, box=tuple(self.box) if self.box else None)
        common = {"where": where, "hook_name": self.hook, "unit": self.unit, "quantile": self.quantile}
        out = []
        if self.ablate:
            out.append(
                FeatureEdit("ablate", _features(self.ablate, "--ablate"), where=where, hook_name=self.hook)
            )
        for op, text in (("clamp", self.clamp), ("scale", self.scale), ("steer", self.steer)):
            for feature, value in _assignments(text, f"--{op}"):
                extra = {"only_firing": self.only_firing} if op == "clamp" else {}
                out.append(FeatureEdit(op, (feature,), value=value, **common, **extra))
        if self.patch:
            out.append(
                FeatureEdit(
                    "patch", _features(self.patch, "--patch"), where=where, hook_name=self.hook, donor=0
                )
            )
        return out


def _features(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise EditError(f"{flag} {text!r}: expected feature indices F[,F...]") from None


def _assignments(text: str, flag: str) -> list[tuple[int, float]]:
    out = []
    for part in (p for p in text.split(",") if p.strip()):
        feature, sep, value = part.partition("=")
        try:
            out.append((int(feature), float(value)))
        except ValueError:
            raise EditError(f"{flag} {part!r}: expected F=VALUE (e.g. 12=3.5)") from None
        if not sep:
            raise EditError(f"{flag} {part!r}: expected F=VALUE (e.g. 12=3.5)")
    return out
