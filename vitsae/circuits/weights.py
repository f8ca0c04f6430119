"""Virtual weights: the input-independent edge between a feature i at hook l and a feature j at hook m.

- **Residual stream** (two residual hooks of a ViT): V_ij = (s_m / s_l) W_dec^(l)[i] . W_enc^(m)[:, j], with
  s the SAEs' `norm_scale`s: the change of j's pre-activation per unit of a_i along the direct path. It
  leaves out every attention layer, MLP and norm between the hooks (and j's activation function).
- **Convolution** (a CNN hook m that is the output of a Conv2d reading hook l's map): the expanded weight
  V_ij[dy, dx] = (s_m / s_l) W_enc^(m)[:, j] . K[:, :, dy, dx] W_dec^(l)[i], per kernel offset or summed over
  them; it leaves out what lies between (nothing, when m is the convolution's own output) and the padding.
- **Class logit** (the last SAE to a class of a ViT with a linear head): W_dec^(l)[i] diag(gamma) W_U[:, c]
  / s_l, `vitsae.analysis.logits`' direct logit effect (the final norm's division and the pooling left out).

`candidates` ranks sources by |V_ij| * E[a_i | a_i > 0] (from `vitsae stats` or the traced images): the
cheap first guess of which edges matter, before any image runs.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from vitsae.analysis.logits import unembedding
from vitsae.sae.model import SparseAutoencoder

RESIDUAL = re.compile(r"blocks\.\d+\.hook_resid_(pre|mid|post)")


def _scale(sae: SparseAutoencoder) -> float:
    return sae.cfg.norm_scale or 1.0


def weight_kind(model, hook_l: str, hook_m: str) -> str | None:
    """ "residual", "conv" or None (no weight path between the hooks that this module reads)."""
    if RESIDUAL.fullmatch(hook_l) and RESIDUAL.fullmatch(hook_m) and hasattr(model, "blocks"):
        return "residual"
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module):
        try:
            module = inner.get_submodule(hook_m)
        except AttributeError:
            return None
        if isinstance(module, nn.Conv2d):
            return "conv"
    return None


@torch.no_grad()
def residual_weights(
    sae_l: SparseAutoencoder, sae_m: SparseAutoencoder, targets_J: torch.Tensor
) -> torch.Tensor:
    """[F_l, J]: V_ij through the residual stream, for every source i and the target features J."""
    ratio = _scale(sae_m) / _scale(sae_l)
    return ratio * (sae_l.W_dec.double() @ sae_m.W_enc[:, targets_J].double())


@torch.no_grad()
def conv_weights(
    conv: nn.Conv2d, sae_l: SparseAutoencoder, sae_m: SparseAutoencoder, targets_J: torch.Tensor
) -> torch.Tensor:
    """[F_l, J, kh, kw]: the convolution's expanded weight between decoder rows and encoder columns."""
    kernel = conv.weight.detach().double()  # [C_m, C_l, kh, kw]
    ratio = _scale(sae_m) / _scale(sae_l)
    enc_CJ = sae_m.W_enc[:, targets_J].double()
    through_JCkk = torch.einsum("mj,mlyx->jlyx", enc_CJ, kernel)
    return ratio * torch.einsum("fl,jlyx->fjyx", sae_l.W_dec.double(), through_JCkk)


@torch.no_grad()
def logit_weights(model, sae_l: SparseAutoencoder, class_index: int) -> torch.Tensor:
    """[F_l, 1]: each decoder row's direct effect on the class logit (refused without a linear head)."""
    W_U_DC = unembedding(model).double()
    return (sae_l.W_dec.double() @ W_U_DC[:, class_index : class_index + 1]) / _scale(sae_l)


def weights_between(model, hook_l: str, hook_m: str, sae_l, sae_m, targets_J: torch.Tensor):
    """(kind, [F_l, J] summed weights, [F_l, J, kh, kw] per-offset weights or None), or (None, None, None)."""
    kind = weight_kind(model, hook_l, hook_m)
    if kind == "residual":
        return kind, residual_weights(sae_l, sae_m, targets_J), None
    if kind == "conv":
        conv = model.model.get_submodule(hook_m)
        if conv.in_channels != sae_l.cfg.d_in or conv.out_channels != sae_m.cfg.d_in:
            return None, None, None
        per_offset = conv_weights(conv, sae_l, sae_m, targets_J)
        return kind, per_offset.sum((2, 3)), per_offset
    return None, None, None


def candidates(
    weights_FJ: torch.Tensor, mean_active_F: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per target: the top-k sources by |V_ij| * E[a_i | a_i > 0] ([J, k] indices and scores)."""
    score_JF = (weights_FJ.abs() * mean_active_F.double()[:, None]).T
    top = score_JF.topk(min(k, score_JF.shape[1]), dim=1)
    return top.indices, top.values
