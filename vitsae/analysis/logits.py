"""What a feature's decoder direction does to a classifier's output, read straight off the weights.

The direct effect of adding W_dec[f] to the final residual stream is W_dec[f] · diag(γ) · W_U: the head
applied without the final norm's normalisation (its elementwise scale γ is folded in). This ignores
the normalisation's division and everything between the SAE's layer and the head, so it describes the
direction, not a measured intervention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vitsae.errors import InvalidValue


@dataclass(frozen=True)
class LogitEffects:
    """Per feature, the classes its direction pushes up most and down most, with the logit change."""

    up_class_Fk: torch.Tensor
    up_value_Fk: torch.Tensor
    down_class_Fk: torch.Tensor
    down_value_Fk: torch.Tensor


def unembedding(model: torch.nn.Module) -> torch.Tensor:
    """The norm-less head [D, C] of a hooked model: `W_U`, scaled by the final norm's weight if any.

    Raises a ValueError when the model has no linear head on the residual width (no classifier, a
    tanh pooler in between, or a pooled width other than d_model).
    """
    W_U = getattr(model, "W_U", None)
    if not isinstance(W_U, torch.Tensor):
        raise InvalidValue(
            f"{type(model).__name__} has no classification head W_U to project features through"
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
