"""Reconstruction metrics of an SAE, streamed over batches as float64 sums (the one definition of each).

- MSE: mean over rows of ||x - x_hat||^2 / D (mean squared error per element).
- FVU: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (centred: the denominator is the total variance).
- explained variance: 1 - sum_d Var(x_d - x_hat_d) / sum_d Var(x_d) (a constant offset is not an error).
- cosine: mean over rows of cos(x, x_hat).
- L0: mean number of nonzero codes per row; L1: mean sum |codes| per row.
- never fired: fraction of features with no nonzero code on any row seen;
  rare: fraction firing on fewer than `RARE_RATE` (1 in 10^5) of the rows seen (never-fired included), the
  features a held-out evaluation of up to ~10^5 rows sees as dead.

The training loop feeds the same accumulator (`update_counts`, from firing counts instead of dense codes)
and all-reduces its `sums` tensor, so every number called "fvu" comes from this file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from vitsae.errors import InvalidValue

RARE_RATE = 1e-5
SCALARS: tuple[str, ...] = ("rows", "sq_err", "x_sq", "cosine", "l0", "l1")


class ReconstructionStats:
    """Running sums from which every reconstruction metric is computed exactly.

    Everything lives in one float64 tensor `sums` = [SCALARS..., x_sum_D, resid_sum_D, fired_F] (allocated
    at the first update), so two accumulators add (`add`) and ranks sum theirs with one all-reduce.
    `fired_F` counts the rows each feature fired on; it is absent (F = 0) until codes are seen.
    """

    def __init__(self) -> None:
        self.sums: torch.Tensor | None = None
        self.d_in = 0
        self.d_sae = 0

    def _allocate(self, d_in: int, d_sae: int, device: torch.device) -> None:
        if self.sums is None:
            self.d_in, self.d_sae = d_in, d_sae
            self.sums = torch.zeros(len(SCALARS) + 2 * d_in + d_sae, dtype=torch.float64, device=device)
        elif d_sae and not self.d_sae:
            self.d_sae = d_sae
            self.sums = torch.cat([self.sums, self.sums.new_zeros(d_sae)])
        if d_in != self.d_in or (d_sae and d_sae != self.d_sae):
            raise InvalidValue(
                f"batch of width {d_in} with {d_sae} features does not match the statistics so far "
                f"(width {self.d_in}, {self.d_sae} features)"
            )

    @property
    def scalars(self) -> dict[str, float]:
        """The summed scalars by name (rows, sq_err, x_sq, cosine, l0, l1)."""
        if self.sums is None:
            return dict.fromkeys(SCALARS, 0.0)
        return dict(zip(SCALARS, self.sums[: len(SCALARS)].tolist(), strict=True))

    @property
    def fired_F(self) -> torch.Tensor | None:
        """Rows each feature fired on (None until codes were seen)."""
        if self.sums is None or not self.d_sae:
            return None
        return self.sums[len(SCALARS) + 2 * self.d_in :]

    @torch.no_grad()
    def update_counts(
        self,
        x_BD: torch.Tensor,
        recon_BD: torch.Tensor,
        fire_counts_F: torch.Tensor | None = None,
        abs_sum: torch.Tensor | float = 0.0,
    ) -> ReconstructionStats:
        """Add a batch given each feature's firing count over its rows and the batch's sum of |codes|."""
        if x_BD.shape != recon_BD.shape:
            raise InvalidValue(f"x {tuple(x_BD.shape)} and x_hat {tuple(recon_BD.shape)} differ in shape")
        d_sae = 0 if fire_counts_F is None else fire_counts_F.numel()
        self._allocate(x_BD.shape[-1], d_sae, x_BD.device)
        # Per-row sums in float32 or better (D terms each), every sum over rows in float64: as exact as
        # float64 throughout for these sizes, at a third of the cost (the trainer calls this every step).
        dtype = torch.promote_types(torch.promote_types(x_BD.dtype, recon_BD.dtype), torch.float32)
        x, recon = x_BD.detach().to(dtype), recon_BD.detach().to(dtype)
        resid = x - recon
        f64 = torch.float64
        x_sq_B, recon_sq_B = x.square().sum(-1), recon.square().sum(-1)
        cosine_B = (x * recon).sum(-1) / (x_sq_B * recon_sq_B).sqrt().clamp_min(1e-24)
        fired = x.new_zeros((), dtype=f64) if fire_counts_F is None else fire_counts_F.to(f64)
        parts = [
            torch.tensor([x.shape[0]], dtype=f64, device=x.device),
            resid.square().sum(-1).sum(dtype=f64)[None],
            x_sq_B.sum(dtype=f64)[None],
            cosine_B.sum(dtype=f64)[None],
            fired.sum()[None],
            torch.as_tensor(abs_sum, dtype=f64, device=x.device).reshape(1),
            x.sum(0, dtype=f64),
            resid.sum(0, dtype=f64),
        ]
        if self.d_sae:
            parts.append(fired if fire_counts_F is not None else x.new_zeros(self.d_sae, dtype=f64))
        self.sums += torch.cat(parts)
        return self

    @torch.no_grad()
    def update(
        self, x_BD: torch.Tensor, recon_BD: torch.Tensor, codes_BF: torch.Tensor | None = None
    ) -> ReconstructionStats:
        """Add a batch with its dense codes (or none: reconstruction metrics only)."""
        if codes_BF is None:
            return self.update_counts(x_BD, recon_BD)
        codes = codes_BF.detach()
        return self.update_counts(x_BD, recon_BD, (codes != 0).sum(0), codes.abs().to(torch.float64).sum())

    def add(self, other: ReconstructionStats) -> ReconstructionStats:
        """Add another accumulator's sums (e.g. one training step's into a window's)."""
        if other.sums is None:
            return self
        self._allocate(other.d_in, other.d_sae, other.sums.device)
        self.sums += other.sums
        return self

    def reset(self) -> None:
        if self.sums is not None:
            self.sums.zero_()

    def summary(self) -> dict[str, float]:
        """mse, fvu, explained_variance, cosine, l0, l1 (and never_fired_fraction, rare_fraction)."""
        s = self.scalars
        if s["rows"] == 0:
            raise InvalidValue("no rows were seen")
        n, width = s["rows"], self.d_in
        offset = len(SCALARS)
        x_sum_D = self.sums[offset : offset + width]
        resid_sum_D = self.sums[offset + width : offset + 2 * width]
        total_var = s["x_sq"] - float(x_sum_D.square().sum()) / n
        resid_var = s["sq_err"] - float(resid_sum_D.square().sum()) / n
        out = {
            "mse": s["sq_err"] / (n * width),
            "fvu": s["sq_err"] / total_var if total_var > 0 else float("nan"),
            "explained_variance": 1.0 - resid_var / total_var if total_var > 0 else float("nan"),
            "cosine": s["cosine"] / n,
            "l0": s["l0"] / n,
            "l1": s["l1"] / n,
        }
        fired_F = self.fired_F
        if fired_F is not None:
            out["never_fired_fraction"] = float((fired_F == 0).double().mean())
            out["rare_fraction"] = float((fired_F < RARE_RATE * n).double().mean())
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


def _decoder_cosines(W_dec_FD: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, cosines [C, F] of rows first..first+C with every row, self-cosines -1), at most 2^24
    cosines at once."""
    chunk = max(1, (1 << 24) // W_dec_FD.shape[0])
    rows_FD = W_dec_FD.detach().float()
    rows_FD = rows_FD / rows_FD.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    n = rows_FD.shape[0]
    for start in range(0, n, chunk):
        cos_CF = rows_FD[start : start + chunk] @ rows_FD.T
        rows = torch.arange(start, min(start + chunk, n), device=rows_FD.device)
        cos_CF[rows - start, rows] = -1.0
        yield start, cos_CF


@torch.no_grad()
def duplicate_fraction(W_dec_FD: torch.Tensor, threshold: float = 0.9) -> float:
    """Fraction of features whose decoder direction has cosine > `threshold` with another feature's
    (copies of one direction, which learned->true MMCS cannot see)."""
    duplicated_F = torch.zeros(W_dec_FD.shape[0], dtype=torch.bool, device=W_dec_FD.device)
    for start, cos_CF in _decoder_cosines(W_dec_FD):
        duplicated_F[start : start + cos_CF.shape[0]] = (cos_CF > threshold).any(-1)
    return float(duplicated_F.double().mean())


@torch.no_grad()
def later_copies(W_dec_FD: torch.Tensor, threshold: float = 0.9) -> torch.Tensor:
    """Bool [F]: features whose decoder direction has cosine > `threshold` with a lower-numbered feature's.

    The lowest-numbered feature of every group of copies is never marked, so re-initialising the marked
    ones keeps each direction once."""
    copies_F = torch.zeros(W_dec_FD.shape[0], dtype=torch.bool, device=W_dec_FD.device)
    for start, cos_CF in _decoder_cosines(W_dec_FD):
        earlier_CF = torch.arange(W_dec_FD.shape[0], device=cos_CF.device) < torch.arange(
            start, start + cos_CF.shape[0], device=cos_CF.device
        ).unsqueeze(1)
        copies_F[start : start + cos_CF.shape[0]] = ((cos_CF > threshold) & earlier_CF).any(-1)
    return copies_F
