"""Reconstruction metrics of an SAE, streamed over batches in float64.

- MSE: mean over rows of ||x - x_hat||^2 / D (mean squared error per element).
- FVU: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (centred: the denominator is the total variance).
- explained variance: 1 - sum_d Var(x_d - x_hat_d) / sum_d Var(x_d) (a constant offset is not an error).
- cosine: mean over rows of cos(x, x_hat).
- L0: mean number of nonzero codes per row; L1: mean sum |codes| per row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from vitsae.errors import InvalidValue


@dataclass
class ReconstructionStats:
    """Running sums from which every reconstruction metric is computed exactly."""

    n_rows: int = 0
    sq_err: float = 0.0
    cosine_sum: float = 0.0
    l0_sum: float = 0.0
    l1_sum: float = 0.0
    x_sum_D: torch.Tensor | None = None
    x_sq_sum: float = 0.0
    resid_sum_D: torch.Tensor | None = None
    fired_F: torch.Tensor | None = field(default=None, repr=False)

    @torch.no_grad()
    def update(self, x_BD: torch.Tensor, recon_BD: torch.Tensor, codes_BF: torch.Tensor | None = None):
        if x_BD.shape != recon_BD.shape:
            raise InvalidValue(f"x {tuple(x_BD.shape)} and x_hat {tuple(recon_BD.shape)} differ in shape")
        x = x_BD.detach().to(torch.float64)
        recon = recon_BD.detach().to(torch.float64)
        resid = x - recon
        self.n_rows += x.shape[0]
        self.sq_err += float(resid.square().sum())
        self.cosine_sum += float(torch.nn.functional.cosine_similarity(x, recon, dim=-1, eps=1e-12).sum())
        self.x_sq_sum += float(x.square().sum())
        self.x_sum_D = x.sum(0) if self.x_sum_D is None else self.x_sum_D + x.sum(0)
        self.resid_sum_D = resid.sum(0) if self.resid_sum_D is None else self.resid_sum_D + resid.sum(0)
        if codes_BF is not None:
            codes = codes_BF.detach()
            self.l0_sum += float((codes != 0).sum())
            self.l1_sum += float(codes.abs().to(torch.float64).sum())
            fired = (codes != 0).any(0)
            self.fired_F = fired if self.fired_F is None else self.fired_F | fired
        return self

    def summary(self) -> dict[str, float]:
        """mse, fvu, explained_variance, cosine, l0, l1 (and the fraction of features that never fired)."""
        if self.n_rows == 0:
            raise InvalidValue("no rows were seen")
        n = self.n_rows
        width = self.x_sum_D.numel()
        total_var = self.x_sq_sum - float(self.x_sum_D.square().sum()) / n
        resid_var = self.sq_err - float(self.resid_sum_D.square().sum()) / n
        out = {
            "mse": self.sq_err / (n * width),
            "fvu": self.sq_err / total_var,
            "explained_variance": 1.0 - resid_var / total_var,
            "cosine": self.cosine_sum / n,
            "l0": self.l0_sum / n,
            "l1": self.l1_sum / n,
        }
        if self.fired_F is not None:
            out["never_fired_fraction"] = float((~self.fired_F).double().mean())
        return out


def reconstruction_metrics(x_BD: torch.Tensor, recon_BD: torch.Tensor, codes_BF: torch.Tensor | None = None):
    """All metrics of one batch (see the module docstring)."""
    return ReconstructionStats().update(x_BD, recon_BD, codes_BF).summary()


@torch.no_grad()
def evaluate_sae(sae, batches: Iterable[torch.Tensor], normalized: bool = False) -> dict[str, float]:
    """Stream `batches` of the model's raw activations through `sae` (in eval mode) and summarise its
    reconstructions, in raw units (batches already in the SAE's normalised units: `normalized=True`).
    """
    was_training = sae.training
    sae.eval()
    stats = ReconstructionStats()
    try:
        for x_BD in batches:
            codes_BF = sae.encode(x_BD, normalized=normalized)
            recon_BD = sae.decode(codes_BF, normalized=normalized)
            stats.update(x_BD, recon_BD, codes_BF)
    finally:
        sae.train(was_training)
    return stats.summary()
