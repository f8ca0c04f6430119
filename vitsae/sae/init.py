"""Initialisation helpers: decoder rows at a chosen norm and b_dec at a sample's geometric median."""

from __future__ import annotations

import torch


def geometric_median(points_ND: torch.Tensor, iterations: int = 100, tol: float = 1e-7) -> torch.Tensor:
    """The point minimising the summed Euclidean distance to `points_ND` (Weiszfeld's iterations).

    Computed in float64; a point the estimate lands on exactly is kept from dividing by zero.
    """
    points = points_ND.detach().to(torch.float64)
    median_D = points.mean(0)
    for _ in range(iterations):
        dist_N = (points - median_D).norm(dim=-1).clamp_min(1e-12)
        weights_N = 1.0 / dist_N
        new_median = (weights_N[:, None] * points).sum(0) / weights_N.sum()
        moved = (new_median - median_D).norm()
        median_D = new_median
        if moved <= tol * (1.0 + median_D.norm()):
            break
    return median_D.to(points_ND.dtype)


def random_rows_at_norm(n_rows: int, width: int, norm: float, generator: torch.Generator | None = None):
    """`[n_rows, width]` random directions, each row scaled to `norm`."""
    rows = torch.randn(n_rows, width, generator=generator)
    return rows * (norm / rows.norm(dim=-1, keepdim=True))


def rows_from_data(
    sample_ND: torch.Tensor,
    center_D: torch.Tensor,
    n_rows: int,
    norm: float,
    generator: torch.Generator | None = None,
    jitter: float = 0.1,
) -> torch.Tensor:
    """`[n_rows, D]` dictionary rows pointing at randomly drawn sample rows (minus `center_D`), at `norm`.

    The dictionary-learning initialisation of K-SVD (Aharon, Elad and Bruckstein 2006) and of k-means
    (Forgy): atoms start at signals, so every feature starts where the data is. Rows are drawn without
    replacement while the sample lasts; a random direction of relative size `jitter` is added so that
    rows drawn twice (or near-duplicate inputs) do not start, and stay, identical.
    """
    n = sample_ND.shape[0]
    picks = torch.randperm(n, generator=generator)[:n_rows]
    if n_rows > n:
        extra = torch.randint(n, (n_rows - n,), generator=generator)
        picks = torch.cat([picks, extra])
    dirs_KD = sample_ND[picks.to(sample_ND.device)].detach().float() - center_D.detach().float()
    dirs_KD = dirs_KD / dirs_KD.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    noise_KD = random_rows_at_norm(n_rows, sample_ND.shape[1], jitter, generator).to(dirs_KD.device)
    rows_KD = dirs_KD + noise_KD
    return rows_KD * (norm / rows_KD.norm(dim=-1, keepdim=True).clamp_min(1e-12))
