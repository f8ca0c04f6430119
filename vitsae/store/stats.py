"""Streaming activation statistics, accumulated in float64 per shard and summed in shard order.

Keeping the per-shard sums (not means) makes the final statistics independent of how shards were
split between processes or runs: the manifest is the same for a resumed or multi-process harvest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class RunningStats:
    """Sums over rows of x and of ||x||, in float64."""

    width: int
    rows: int = 0
    sum_D: np.ndarray = field(default=None)  # type: ignore[assignment]
    norm_sum: float = 0.0

    def __post_init__(self) -> None:
        if self.sum_D is None:
            self.sum_D = np.zeros(self.width, dtype=np.float64)

    def update(self, acts_RD: torch.Tensor) -> None:
        acts64_RD = acts_RD.to(torch.float64)
        self.rows += acts64_RD.shape[0]
        self.sum_D += acts64_RD.sum(dim=0).cpu().numpy()
        self.norm_sum += float(torch.linalg.vector_norm(acts64_RD, dim=1).sum())

    def add(self, other: RunningStats) -> None:
        self.rows += other.rows
        self.sum_D += other.sum_D
        self.norm_sum += other.norm_sum

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "sum": self.sum_D.tolist(), "norm_sum": self.norm_sum}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunningStats:
        sum_D = np.asarray(data["sum"], dtype=np.float64)
        return cls(len(sum_D), int(data["rows"]), sum_D, float(data["norm_sum"]))

    def summary(self) -> dict[str, Any]:
        """The manifest's `stats`: mean vector and mean norm (zeros for an empty store)."""
        rows = max(self.rows, 1)
        return {"mean": (self.sum_D / rows).tolist(), "mean_norm": self.norm_sum / rows}
