"""Sparse feature codes: the K largest (or all active) features of each row, as indices and values.

The one currency between the SAE encoders, the kernels and the analysis: `indices_BK` (int32) name the
features, `values_BK` hold their activations, `counts_B` says how many slots of each row are in use.
Unused slots hold index 0 and value 0, so a decode that ignores `counts_B` is still correct.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SparseCodes:
    """Per-row active features: `indices_BK` int32, `values_BK` float, `counts_B` int32 slots in use."""

    indices_BK: torch.Tensor
    values_BK: torch.Tensor
    counts_B: torch.Tensor

    def __post_init__(self) -> None:
        if self.indices_BK.dtype != torch.int32:
            raise TypeError(f"indices_BK must be int32, got {self.indices_BK.dtype}")
        if self.indices_BK.shape != self.values_BK.shape or self.indices_BK.dim() != 2:
            raise ValueError(
                f"indices_BK {tuple(self.indices_BK.shape)} and values_BK {tuple(self.values_BK.shape)} "
                "must be the same 2-d shape"
            )
        if self.counts_B.shape != self.indices_BK.shape[:1]:
            raise ValueError(
                f"counts_B {tuple(self.counts_B.shape)} must have one entry per row of "
                f"indices_BK {tuple(self.indices_BK.shape)}"
            )

    @property
    def k(self) -> int:
        """Slots per row."""
        return self.indices_BK.shape[1]

    def to_dense(self, n_features: int) -> torch.Tensor:
        """The dense `[B, F]` codes (padding slots add zero to feature 0)."""
        dense_BF = self.values_BK.new_zeros(self.values_BK.shape[0], n_features)
        return dense_BF.scatter_add(1, self.indices_BK.long(), self.values_BK)
