"""Each feature's nearest features: by decoder cosine, and by co-activation on the tokens where it fires.

Decoder cosine is computed in blocks of rows, so memory is O(block·F), never F². Co-activation comes from
the statistics pass's random sample of each feature's firing tokens (`FeatureStats.sample_cofire_FSc`: the
strongest `co_slots` features of every sampled token), so it costs nothing beyond that pass: the fraction
of f's sampled tokens where g also fires estimates P(g | f), and with the firing counts gives the Jaccard
index |f ∧ g| / |f ∨ g|, which ranks partners without favouring features that fire everywhere.

`neighbours.safetensors` (format `vitsae.neighbours`, version 1, in the statistics folder): int32
`decoder_index_Fk` and float32 `decoder_cosine_Fk`, `coact_index_Fk` and `coact_jaccard_Fk`, best first,
-1 / 0 where a feature has fewer neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vitsae.analysis.stats import FeatureStats
from vitsae.errors import InvalidValue
from vitsae.fileio import load_versioned_tensors, save_tensors_atomic

NEIGHBOURS_FILE = "neighbours.safetensors"
NEIGHBOURS_FORMAT = "vitsae.neighbours"
NEIGHBOURS_VERSION = 1
_FIELDS = ("decoder_index_Fk", "decoder_cosine_Fk", "coact_index_Fk", "coact_jaccard_Fk")


@dataclass(frozen=True)
class Neighbours:
    """Per feature, its k nearest features by decoder cosine and by co-activation (see module doc)."""

    decoder_index_Fk: torch.Tensor
    decoder_cosine_Fk: torch.Tensor
    coact_index_Fk: torch.Tensor
    coact_jaccard_Fk: torch.Tensor

    def save(self, stats_dir: str | Path) -> Path:
        path = Path(stats_dir) / NEIGHBOURS_FILE
        save_tensors_atomic(
            path,
            {name: getattr(self, name).contiguous() for name in _FIELDS},
            metadata={"format": NEIGHBOURS_FORMAT, "format_version": str(NEIGHBOURS_VERSION)},
        )
        return path

    @classmethod
    def load(cls, stats_dir: str | Path) -> Neighbours | None:
        """The folder's neighbours, or None when it has none."""
        path = Path(stats_dir) / NEIGHBOURS_FILE
        if not path.is_file():
            return None
        repair = "rerun `vitsae stats`"
        return cls(
            **load_versioned_tensors(path, NEIGHBOURS_FORMAT, NEIGHBOURS_VERSION, list(_FIELDS), repair)
        )


@torch.no_grad()
def decoder_neighbours(
    W_dec_FD: torch.Tensor, k: int, block: int = 2048
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k features whose decoder directions have the largest cosine with each one's (itself excluded)."""
    n_features = W_dec_FD.shape[0]
    k = min(k, n_features - 1)
    unit_FD = torch.nn.functional.normalize(W_dec_FD.detach().float().cpu(), dim=1)
    index_Fk = torch.empty((n_features, k), dtype=torch.int32)
    cosine_Fk = torch.empty((n_features, k), dtype=torch.float32)
    for start in range(0, n_features, block):
        stop = min(n_features, start + block)
        cos_BF = unit_FD[start:stop] @ unit_FD.T
        cos_BF[torch.arange(stop - start), torch.arange(start, stop)] = -2.0  # never itself
        values, index = cos_BF.topk(k, dim=1)
        index_Fk[start:stop], cosine_Fk[start:stop] = index.to(torch.int32), values
    return index_Fk, cosine_Fk


def coactivation_neighbours(stats: FeatureStats, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k features with the largest estimated Jaccard index of firing with each one (see module doc)."""
    if stats.sample_cofire_FSc is None:
        raise InvalidValue("these statistics predate the co-activation sample: rerun `vitsae stats`")
    n_features = stats.n_features
    cofire_FSc = stats.sample_cofire_FSc.long()
    n_sampled_F = (stats.sample_image_FS >= 0).sum(1).clamp(min=1)
    feature_E = torch.arange(n_features)[:, None, None].expand_as(cofire_FSc).reshape(-1)
    partner_E = cofire_FSc.reshape(-1)
    keep = (partner_E >= 0) & (partner_E != feature_E)
    pair_P, count_P = torch.unique(feature_E[keep] * n_features + partner_E[keep], return_counts=True)
    f_P, g_P = pair_P // n_features, pair_P % n_features
    fires_F = stats.fire_count_F.double()
    both_P = count_P.double() / n_sampled_F[f_P].double() * fires_F[f_P]
    jaccard_P = (both_P / (fires_F[f_P] + fires_F[g_P] - both_P).clamp(min=1)).float()
    index_Fk = torch.full((n_features, k), -1, dtype=torch.int32)
    jaccard_Fk = torch.zeros((n_features, k), dtype=torch.float32)
    order = torch.argsort(f_P * 2.0 - jaccard_P.double(), stable=True)  # by feature, then best first
    f_P, g_P, jaccard_P = f_P[order], g_P[order], jaccard_P[order]
    start_P = torch.searchsorted(f_P, f_P)  # index of each feature's first pair
    rank_P = torch.arange(f_P.numel()) - start_P
    top = rank_P < k
    index_Fk[f_P[top], rank_P[top]] = g_P[top].to(torch.int32)
    jaccard_Fk[f_P[top], rank_P[top]] = jaccard_P[top]
    return index_Fk, jaccard_Fk


def compute_neighbours(stats: FeatureStats, W_dec_FD: torch.Tensor, k: int = 8) -> Neighbours:
    """Both kinds of nearest features of every feature of the statistics' SAE."""
    if W_dec_FD.shape[0] != stats.n_features:
        raise InvalidValue(f"the decoder has {W_dec_FD.shape[0]} features, the statistics {stats.n_features}")
    decoder = decoder_neighbours(W_dec_FD, k)
    return Neighbours(*decoder, *coactivation_neighbours(stats, k))
