"""Synthetic activations with a known sparse dictionary, for tests and benchmarks without a model.

`sparse_dictionary_data`: x = sum_i c_i d_i + noise: `n_atoms` random unit vectors d_i in `d` dimensions,
each row using about `active` of them (each atom on independently with probability active / n_atoms)
with coefficients c_i ~ Uniform(0.5, 1.5), plus isotropic Gaussian noise of standard deviation `noise`.

`KnownDictionary`: the harder generator of `scripts/bench_recovery.py`, streamed batch by batch (a
`BatchSource`, so a 3M-row run never holds its data): Zipf-distributed atom frequencies (exponent
`zipf`, scaled so a row has `active` atoms on average), log-normal magnitudes (heavy-tailed, `sigma`),
optional co-firing pairs (atom 2j+1 also fires with probability `pair_cofire` when atom 2j fires) and
Gaussian noise at `noise` times the per-dimension signal scale.

`dictionary_recovery` / `recovery_scores`: mean max cosine (MMCS) between a learned and the true dictionary.
`largest_codes` / `tied_topk_codes`: reference codes from the true dictionary, the FVU yardsticks of
`scripts/bench_recovery.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

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


@dataclass(frozen=True)
class KnownDictionary:
    """A stream of rows made from a fixed random dictionary (see the module docstring)."""

    d: int = 128
    n_atoms: int = 1024
    active: float = 8.0
    zipf: float = 0.5
    sigma: float = 0.5
    pair_cofire: float = 0.0
    noise: float = 0.05
    batch_size: int = 4096
    batches_per_epoch: int = 1 << 20
    seed: int = 0

    @cached_property  # drawn once from the seed, not again for every batch
    def dictionary_AD(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        atoms = torch.randn(self.n_atoms, self.d, generator=generator)
        return atoms / atoms.norm(dim=-1, keepdim=True)

    @cached_property
    def frequencies_A(self) -> torch.Tensor:
        """Each atom's firing probability (before co-firing), summing to `active`."""
        weights = torch.arange(1, self.n_atoms + 1, dtype=torch.float64).pow(-self.zipf)
        return (weights * self.active / weights.sum()).clamp(max=1.0).float()

    def rows(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.rows_and_codes(n, generator)[0]

    def rows_and_codes(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows `[n, d]`, their true codes `[n, n_atoms]`)."""
        p_A = self.frequencies_A
        on_NA = torch.rand(n, self.n_atoms, generator=generator) < p_A
        if self.pair_cofire > 0:
            lead_NP = on_NA[:, 0::2]
            follow_NP = lead_NP & (torch.rand(lead_NP.shape, generator=generator) < self.pair_cofire)
            on_NA[:, 1::2] |= follow_NP[:, : on_NA[:, 1::2].shape[1]]
        codes_NA = torch.exp(self.sigma * torch.randn(n, self.n_atoms, generator=generator)) * on_NA
        signal_ND = codes_NA @ self.dictionary_AD
        scale = float((self.active * torch.exp(torch.tensor(2 * self.sigma**2)) / self.d) ** 0.5)
        return signal_ND + self.noise * scale * torch.randn(n, self.d, generator=generator), codes_NA

    def batches(self, epoch: int, start_batch: int) -> Iterator[torch.Tensor]:
        for b in range(start_batch, self.batches_per_epoch):
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 1_000_003 + b)
            yield self.rows(self.batch_size, generator)

    def held_out(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, true codes) from a generator stream training never reads."""
        return self.rows_and_codes(n, torch.Generator().manual_seed(self.seed + 1_000_003))


def dictionary_recovery(learned_FD: torch.Tensor, true_AD: torch.Tensor) -> float:
    """Mean over true atoms of the best cosine similarity with any learned decoder row."""
    return recovery_scores(learned_FD, true_AD)["mmcs_true_to_learned"]


def recovery_scores(learned_FD: torch.Tensor, true_AD: torch.Tensor, at: float = 0.9) -> dict[str, float]:
    """MMCS both ways (true->learned: each true atom's best match; learned->true: each learned row's) and
    the fraction of true atoms recovered at cosine > `at`."""
    learned = learned_FD / learned_FD.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    true = true_AD / true_AD.norm(dim=-1, keepdim=True)
    cos_AF = true.double() @ learned.double().T
    best_A = cos_AF.max(dim=1).values
    return {
        "mmcs_true_to_learned": float(best_A.mean()),
        "mmcs_learned_to_true": float(cos_AF.max(dim=0).values.mean()),
        "recovered": float((best_A > at).double().mean()),
    }


def largest_codes(codes_NA: torch.Tensor, k: int) -> torch.Tensor:
    """Each row's k largest codes, the rest zeroed: the best a fixed-k code can do with a perfect encoder."""
    keep_NA = torch.zeros_like(codes_NA).scatter_(
        1, codes_NA.topk(min(k, codes_NA.shape[1]), dim=1).indices, 1.0
    )
    return codes_NA * keep_NA


def tied_topk_codes(rows_ND: torch.Tensor, atoms_AD: torch.Tensor, k: int) -> torch.Tensor:
    """The codes of a tied TopK SAE made of the true atoms (encoder = decoder, no biases): each row's k
    largest projections, times the one factor that minimises the squared error over `rows_ND`. What a
    perfect dictionary gives behind a plain linear encoder."""
    codes_NA = largest_codes(rows_ND @ atoms_AD.T, k)
    recon_ND = codes_NA @ atoms_AD
    return codes_NA * float((rows_ND * recon_ND).sum() / (recon_ND * recon_ND).sum().clamp_min(1e-30))
