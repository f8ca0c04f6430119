"""Synthetic activations with a known sparse dictionary, for tests and benchmarks without a model.

x = sum_i c_i d_i + noise: `n_atoms` random unit vectors d_i in `d` dimensions, each row using about
`active` of them (each atom on independently with probability active / n_atoms) with coefficients
c_i ~ Uniform(0.5, 1.5), plus isotropic Gaussian noise of standard deviation `noise` per dimension.
"""

from __future__ import annotations

import torch


def sparse_dictionary_data(
    n: int, d: int = 64, n_atoms: int = 256, active: float = 4.0, noise: float = 0.01, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(activations `[n, d]`, the true dictionary `[n_atoms, d]` with unit rows)."""
    generator = torch.Generator().manual_seed(seed)
    dictionary_AD = torch.randn(n_atoms, d, generator=generator)
    dictionary_AD /= dictionary_AD.norm(dim=-1, keepdim=True)
    on_NA = torch.rand(n, n_atoms, generator=generator) < active / n_atoms
    coeffs_NA = (0.5 + torch.rand(n, n_atoms, generator=generator)) * on_NA
    acts_ND = coeffs_NA @ dictionary_AD + noise * torch.randn(n, d, generator=generator)
    return acts_ND, dictionary_AD


def dictionary_recovery(learned_FD: torch.Tensor, true_AD: torch.Tensor) -> float:
    """Mean over true atoms of the best cosine similarity with any learned decoder row."""
    learned = learned_FD / learned_FD.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    true = true_AD / true_AD.norm(dim=-1, keepdim=True)
    return float((true @ learned.T).max(dim=1).values.mean())
