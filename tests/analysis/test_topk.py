"""The running top-k merge against sorting everything at once."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vitsae.analysis.topk import TopKBuffer, top_k_per_group


@settings(max_examples=60, deadline=None)
@given(
    n_features=st.integers(1, 6),
    k=st.integers(1, 5),
    batch_sizes=st.lists(st.integers(0, 30), min_size=1, max_size=5),
    seed=st.integers(0, 2**16),
)
def test_merged_batches_keep_the_k_largest_scores_with_their_payloads(n_features, k, batch_sizes, seed):
    gen = torch.Generator().manual_seed(seed)
    buffer = TopKBuffer(n_features, k)
    payload_Fk = torch.full((n_features, k), -1, dtype=torch.int64)
    seen: list[tuple[int, float, int]] = []
    next_id = 0
    for size in batch_sizes:
        feature_M = torch.randint(0, n_features, (size,), generator=gen)
        # distinct scores so the expected top-k is unique
        score_M = torch.randperm(10_000, generator=gen)[:size].float() + next_id * 10_000
        ids_M = torch.arange(next_id, next_id + size)
        next_id += size
        writes = buffer.update(feature_M, score_M)
        payload_Fk[writes.feature_W, writes.slot_W] = ids_M[writes.candidate_W]
        seen += list(zip(feature_M.tolist(), score_M.tolist(), ids_M.tolist(), strict=True))
    order = buffer.order()
    scores = torch.gather(buffer.scores_Fk, 1, order)
    payload = torch.gather(payload_Fk, 1, order)
    for f in range(n_features):
        best = sorted((s, i) for g, s, i in seen if g == f)[::-1][:k]
        pairs = zip(scores[f].tolist(), payload[f].tolist(), strict=True)
        got = [(s, i) for s, i in pairs if s != float("-inf")]
        assert got == best


def test_top_k_per_group_pads_groups_with_fewer_candidates():
    scores, ids = top_k_per_group(torch.tensor([1, 1, 1, 0]), torch.tensor([0.5, 2.0, 1.0, 3.0]), 3, 2)
    assert scores.tolist() == [[3.0, float("-inf")], [2.0, 1.0], [float("-inf")] * 2]
    assert ids.tolist() == [[3, -1], [1, 2], [-1, -1]]


def test_update_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(4,\) and \(5,\)"):
        TopKBuffer(3, 2).update(torch.zeros(4, dtype=torch.long), torch.zeros(5))
