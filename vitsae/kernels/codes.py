"""Sparse codes: the K active features of each row of a batch, as fixed-width index/value arrays."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vitsae.errors import InvalidValue


def used_slots(counts_B: torch.Tensor, k: int) -> torch.Tensor:
    """The B x k mask of the slots each row uses: slot j of row b is used when j < counts_B[b]."""
    return torch.arange(k, device=counts_B.device)[None, :] < counts_B[:, None]


@dataclass(frozen=True)
class SparseCodes:
    """Per-row active features of a B x F code matrix, stored as B x K slots.

    `indices_BK` (int32) and `values_BK` hold the active features of each row, `counts_B[b]` how many
    there are; the unused slots of a row hold index 0 and value 0, so a slot never contributes to a sum
    and every index is a valid row of the decoder. Codes made by `vitsae.kernels` put the active features
    first, largest first; consumers must not rely on that order. `packed` promises that no unused slot
    holds a nonzero value (set by this package's encoders; it spares the sparse decode a device sync).
    """

    indices_BK: torch.Tensor
    values_BK: torch.Tensor
    counts_B: torch.Tensor
    packed: bool = False

    def __post_init__(self) -> None:
        if self.indices_BK.dtype != torch.int32:
            raise TypeError(f"indices_BK must be int32, got {self.indices_BK.dtype}")
        if self.indices_BK.dim() != 2 or self.indices_BK.shape != self.values_BK.shape:
            raise InvalidValue(
                f"indices_BK {tuple(self.indices_BK.shape)} and values_BK {tuple(self.values_BK.shape)} "
                "must be the same 2-D shape"
            )
        if self.counts_B.shape != self.indices_BK.shape[:1]:
            raise InvalidValue(
                f"counts_B {tuple(self.counts_B.shape)} must have one entry per row of "
                f"indices_BK {tuple(self.indices_BK.shape)}"
            )

    @property
    def batch_size(self) -> int:
        return self.indices_BK.shape[0]

    @property
    def k(self) -> int:
        """Slots per row (the largest count the codes can hold)."""
        return self.indices_BK.shape[1]

    @property
    def used_BK(self) -> torch.Tensor:
        """Which slots hold an active feature (the first counts_B[b] of row b)."""
        return used_slots(self.counts_B, self.k)

    def to_dense(self, n_features: int) -> torch.Tensor:
        """The B x F code matrix (differentiable in `values_BK`); for tests and small batches."""
        dense_BF = self.values_BK.new_zeros(self.batch_size, n_features)
        return dense_BF.scatter_add(1, self.indices_BK.long(), self.values_BK)

    @staticmethod
    def from_dense(codes_BF: torch.Tensor, k: int | None = None) -> SparseCodes:
        """Pack the nonzeros of a B x F matrix (largest first); `k` slots, default the widest row."""
        counts_B = (codes_BF != 0).sum(dim=1)
        widest = int(counts_B.max()) if counts_B.numel() else 0
        width = widest if k is None else k
        if width < widest:
            raise InvalidValue(f"a row has {widest} nonzeros, more than k={width}")
        key_BF = torch.where(codes_BF != 0, codes_BF.abs(), codes_BF.new_tensor(-1.0))
        _, indices_BK = torch.topk(key_BF, width, dim=1)
        used_BK = used_slots(counts_B, width)
        indices_BK = torch.where(used_BK, indices_BK, 0)
        values_BK = torch.where(used_BK, codes_BF.gather(1, indices_BK), 0)
        return SparseCodes(indices_BK.to(torch.int32), values_BK, counts_B.to(torch.int32), packed=True)
