"""Per-feature running top-k buffers, merged batch by batch without Python loops over features.

A `TopKBuffer` keeps, for each of F features, the k largest scores seen so far. A batch arrives as a
flat list of candidates `(feature_M, score_M)`; the buffer drops those at or below their feature's
current k-th best, takes each remaining feature's k best (one sort), merges them with that feature's
running entries (one `torch.topk` over [rows, 2k]) and writes the winners into the slots the losers
freed. Slots of surviving entries never move, so callers can keep side arrays
aligned with the slots (per-image activation maps) and update only the slots `update` reports as newly
written.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vitsae.errors import InvalidValue


@dataclass(frozen=True)
class SlotWrites:
    """Where a merge wrote new entries: `buffer.*[feature_W, slot_W]` now hold `candidate_W` of the batch."""

    feature_W: torch.Tensor  # int64
    slot_W: torch.Tensor  # int64
    candidate_W: torch.Tensor  # int64, index into the batch's candidate list


def top_k_per_group(
    group_M: torch.Tensor, score_M: torch.Tensor, n_groups: int, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best candidates of every group: (scores [G, k] padded with -inf, candidate ids [G, k] or -1)."""
    scores_Gk = torch.full((n_groups, k), float("-inf"), dtype=torch.float32)
    ids_Gk = torch.full((n_groups, k), -1, dtype=torch.int64)
    if group_M.numel() == 0:
        return scores_Gk, ids_Gk
    by_score = torch.argsort(score_M, descending=True, stable=True)
    by_group = by_score[torch.argsort(group_M[by_score], stable=True)]
    group_sorted = group_M[by_group]
    sizes_G = torch.bincount(group_sorted, minlength=n_groups)
    starts_G = torch.cumsum(sizes_G, 0) - sizes_G
    rank_M = torch.arange(group_M.numel()) - starts_G[group_sorted]
    keep = rank_M < k
    rows, cols = group_sorted[keep], rank_M[keep]
    scores_Gk[rows, cols] = score_M[by_group[keep]].float()
    ids_Gk[rows, cols] = by_group[keep]
    return scores_Gk, ids_Gk


class TopKBuffer:
    """The k largest scores per feature; empty slots hold -inf.

    Payloads live with the caller in arrays shaped like `scores_Fk`, updated from the `SlotWrites` that
    `update` returns, so one buffer can carry any number of them (image index, token, label, map).
    """

    def __init__(self, n_features: int, k: int) -> None:
        if n_features < 1 or k < 1:
            raise InvalidValue(f"TopKBuffer needs n_features >= 1 and k >= 1, got {n_features} and {k}")
        self.n_features = n_features
        self.k = k
        self.scores_Fk = torch.full((n_features, k), float("-inf"), dtype=torch.float32)
        self.threshold_F = torch.full((n_features,), float("-inf"), dtype=torch.float32)  # row minima

    def update(self, feature_M: torch.Tensor, score_M: torch.Tensor) -> SlotWrites:
        """Merge a batch of candidates; return the slots that now hold batch candidates."""
        if feature_M.shape != score_M.shape or feature_M.dim() != 1:
            raise InvalidValue(
                "TopKBuffer.update needs two 1-d tensors of one length, got shapes "
                f"{tuple(feature_M.shape)} and {tuple(score_M.shape)}"
            )
        k = self.k
        feature_M = feature_M.long()
        # Only candidates above their feature's current k-th best can enter; after the first batches
        # that is a small fraction, so the sorts below run on few entries and few feature rows.
        ids_C = (score_M > self.threshold_F[feature_M]).nonzero(as_tuple=True)[0]
        if ids_C.numel() == 0:
            empty = torch.zeros(0, dtype=torch.int64)
            return SlotWrites(empty, empty, empty)
        rows_R, group_C = torch.unique(feature_M[ids_C], return_inverse=True)
        n_rows = rows_R.numel()
        batch_scores_Rk, batch_ids_Rk = top_k_per_group(group_C, score_M[ids_C], n_rows, k)
        old_scores_Rk = self.scores_Fk[rows_R]
        merged_scores_Rk, position_Rk = torch.topk(torch.cat([old_scores_Rk, batch_scores_Rk], 1), k, dim=1)
        is_new_Rk = (position_Rk >= k) & torch.isfinite(merged_scores_Rk)

        # Slots whose old entry survived (positions < k); the others are free for the new winners. A free
        # slot left unfilled held an empty (-inf) entry: finite old entries only lose to k finite ones.
        kept_Rk1 = torch.zeros((n_rows, k + 1), dtype=torch.int8)
        kept_Rk1.scatter_(1, torch.where(position_Rk >= k, k, position_Rk), 1)
        free_first_Rk = torch.argsort(kept_Rk1[:, :k], dim=1, stable=True)
        new_first_Rk = torch.argsort((~is_new_Rk).to(torch.int8), dim=1, stable=True)
        n_new_R = is_new_Rk.sum(1)

        row_W, rank_W = (torch.arange(k)[None, :] < n_new_R[:, None]).nonzero(as_tuple=True)
        slot_W = free_first_Rk[row_W, rank_W]
        batch_slot_W = position_Rk[row_W, new_first_Rk[row_W, rank_W]] - k
        feature_W = rows_R[row_W]
        self.scores_Fk[feature_W, slot_W] = batch_scores_Rk[row_W, batch_slot_W]
        self.threshold_F[rows_R] = self.scores_Fk[rows_R].amin(1)
        return SlotWrites(feature_W, slot_W, ids_C[batch_ids_Rk[row_W, batch_slot_W]])

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The buffer's whole state (payloads live with the caller), as live references."""
        return {"scores_Fk": self.scores_Fk, "threshold_F": self.threshold_F}

    def order(self) -> torch.Tensor:
        """Slot order [F, k] that sorts each feature's entries by descending score, empty slots last."""
        return torch.sort(self.scores_Fk, dim=1, descending=True, stable=True).indices
