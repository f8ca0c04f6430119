"""What a feature's decoder direction does to a classifier's output, read straight off the weights.

The direct effect of adding W_dec[f] to the final residual stream is W_dec[f] · diag(γ) · W_U: the head
applied without the final norm's normalisation (its elementwise scale γ is folded in). This ignores
the normalisation's division and everything between the SAE's layer and the head, so it describes the
direction, not a measured intervention.

`vitsae stats` computes them when the model has such a head and saves them beside the statistics as
`logit_effects.safetensors` (format `vitsae.logit_effects` version 1: the four [F, k] tensors of
`LogitEffects`, k = `LOGIT_CLASSES` or the number of classes if fewer, best first); the browser reads that
file and never loads a model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch

from vitsae.errors import InvalidValue
from vitsae.fileio import load_versioned_tensors, save_tensors_atomic

LOGIT_EFFECTS_FILE = "logit_effects.safetensors"
LOGIT_EFFECTS_FORMAT = "vitsae.logit_effects"
LOGIT_EFFECTS_VERSION = 1
LOGIT_CLASSES = 16  # classes kept per feature and direction (the browser lists up to this many)


@dataclass(frozen=True)
class LogitEffects:
    """Per feature, the classes its direction pushes up most and down most, with the logit change."""

    up_class_Fk: torch.Tensor
    up_value_Fk: torch.Tensor
    down_class_Fk: torch.Tensor
    down_value_Fk: torch.Tensor

    def save(self, stats_dir: str | Path) -> Path:
        """Write `logit_effects.safetensors` into `stats_dir`."""
        path = Path(stats_dir) / LOGIT_EFFECTS_FILE
        # class indices as int32 (half the file; no head has 2**31 classes)
        tensors = {f.name: getattr(self, f.name) for f in fields(self)}
        tensors = {name: t.int() if "class" in name else t for name, t in tensors.items()}
        save_tensors_atomic(
            path,
            tensors,
            metadata={"format": LOGIT_EFFECTS_FORMAT, "format_version": str(LOGIT_EFFECTS_VERSION)},
        )
        return path

    @classmethod
    def load(cls, stats_dir: str | Path) -> LogitEffects | None:
        """The logit effects saved in `stats_dir`, or None when it holds none."""
        path = Path(stats_dir) / LOGIT_EFFECTS_FILE
        if not path.is_file():
            return None
        names = [f.name for f in fields(cls)]
        repair = "rerun `vitsae stats`"
        tensors = load_versioned_tensors(path, LOGIT_EFFECTS_FORMAT, LOGIT_EFFECTS_VERSION, names, repair)
        return cls(**{name: t.long() if "class" in name else t for name, t in tensors.items()})


def unembedding(model: torch.nn.Module, hook_name: str | None = None) -> torch.Tensor:
    """The norm-less head [D, C] of a hooked model: `W_U`, scaled by the final norm's weight if any.

    Raises a ValueError when the model has no linear head on the residual width (no classifier, a
    tanh pooler in between, or a pooled width other than d_model), or, for a wrapped CNN, when the head is
    not linear in `hook_name`'s output (`HookedModule.head_input_hooks`).
    """
    W_U = getattr(model, "W_U", None)
    if not isinstance(W_U, torch.Tensor):
        raise InvalidValue(
            f"{type(model).__name__} has no classification head W_U to project features through"
        )
    linear_in = getattr(model, "head_input_hooks", None)  # a wrapped CNN: the head is linear there only
    if hook_name is not None and linear_in is not None and hook_name not in linear_in:
        raise InvalidValue(
            f"the head is not linear in hook {hook_name!r} (layers or ops lie between); it reads "
            f"{', '.join(sorted(linear_in)) or 'no hook directly'}"
        )
    if getattr(model, "pooler_W", None) is not None:
        raise InvalidValue(
            "the model has a tanh pooler before its head: the head is not linear in the residual"
        )
    ln_final = getattr(model, "ln_final", None)
    gamma = getattr(ln_final, "w", None)
    W_DC = W_U.detach().float()
    if gamma is not None:
        if gamma.shape[0] != W_DC.shape[0]:
            raise InvalidValue(
                f"the head's input width {W_DC.shape[0]} differs from the residual width {gamma.shape[0]} "
                "(a pooled head that concatenates tokens)"
            )
        W_DC = gamma.detach().float()[:, None] * W_DC
    return W_DC


def logit_effects(
    W_dec_FD: torch.Tensor, W_U_DC: torch.Tensor, k: int = 5, chunk: int = 4096
) -> LogitEffects:
    """Top-k and bottom-k classes of W_dec[f] @ W_U for every feature, in chunks of features."""
    if W_dec_FD.shape[1] != W_U_DC.shape[0]:
        raise InvalidValue(
            f"decoder rows have width {W_dec_FD.shape[1]} (W_dec {tuple(W_dec_FD.shape)}) but the head "
            f"expects {W_U_DC.shape[0]} (W_U {tuple(W_U_DC.shape)})"
        )
    k = min(k, W_U_DC.shape[1])
    parts: list[tuple[torch.Tensor, ...]] = []
    W_U_DC = W_U_DC.detach().float()
    for start in range(0, W_dec_FD.shape[0], chunk):
        effect_fC = W_dec_FD[start : start + chunk].detach().float() @ W_U_DC
        up = torch.topk(effect_fC, k, dim=1)
        down = torch.topk(effect_fC, k, dim=1, largest=False)
        parts.append((up.indices, up.values, down.indices, down.values))
    return LogitEffects(*(torch.cat(column) for column in zip(*parts, strict=True)))


def model_logit_effects(
    spec: str,
    W_dec_FD: torch.Tensor,
    k: int = LOGIT_CLASSES,
    *,
    explicit: bool = True,
    hook_name: str | None = None,
) -> tuple[LogitEffects | None, str]:
    """The logit effects of decoder rows (of an SAE at `hook_name`) through the head of the model `spec`,
    or None with the reason.

    A model without a linear head gives the reason. So does one that cannot be loaded, unless `explicit`
    (the user named it, rather than it being read from a store's manifest): then the error is raised.
    """
    from vitsae.models import load  # here: the statistics themselves need no model

    try:
        model = load(spec)
    except (ValueError, FileNotFoundError, OSError, ImportError) as err:
        if explicit:
            raise
        return None, f"the recorded model {spec!r} could not be loaded ({err})"
    try:
        head = unembedding(model, hook_name)
    except ValueError as err:
        return None, str(err)
    return logit_effects(W_dec_FD, head, k=k), ""
