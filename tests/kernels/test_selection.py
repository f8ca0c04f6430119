"""Index maths: exact top-k from per-block candidates, packing of active sets, the SparseCodes container."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vitsae.kernels import SparseCodes, selection


@st.composite
def rows_with_ties(draw):
    B = draw(st.integers(1, 5))
    F = draw(st.integers(1, 40))
    # Small integers make ties common, which is where the index maths can go wrong.
    values = draw(st.lists(st.integers(-4, 4), min_size=B * F, max_size=B * F))
    return torch.tensor(values, dtype=torch.float32).reshape(B, F)


@settings(max_examples=200, deadline=None)
@given(rows_with_ties(), st.integers(1, 40), st.integers(1, 17))
def test_blockwise_candidates_then_merge_is_the_exact_topk(values_BF, k, block_f):
    k = min(k, values_BF.shape[1])
    cand_vals, cand_idx = selection.blockwise_topk_candidates(values_BF, k, block_f)
    got_vals, got_idx = selection.merge_topk_candidates(cand_vals, cand_idx, k)
    want_vals, want_idx = selection.topk_rows(values_BF, k)
    assert torch.equal(got_vals, want_vals)
    assert torch.equal(got_idx, want_idx)


@settings(max_examples=100, deadline=None)
@given(rows_with_ties(), st.integers(1, 40))
def test_topk_rows_orders_by_value_then_lower_index(values_BF, k):
    k = min(k, values_BF.shape[1])
    vals, idx = selection.topk_rows(values_BF, k)
    for row_vals, row_idx, full in zip(vals, idx, values_BF, strict=True):
        keys = [(-float(v), int(i)) for v, i in zip(row_vals, row_idx, strict=True)]
        assert keys == sorted(keys)
        expected = sorted((-float(v), i) for i, v in enumerate(full.tolist()))[:k]
        assert keys == expected


@settings(max_examples=100, deadline=None)
@given(rows_with_ties())
def test_pack_active_keeps_every_active_entry_and_pads_with_zero(values_BF):
    active_BF = values_BF > 0
    indices_BK, values_BK, counts_B = selection.pack_active(values_BF, active_BF)
    assert indices_BK.dtype == torch.int32 and counts_B.dtype == torch.int32
    assert torch.equal(counts_B.long(), active_BF.sum(dim=1))
    codes = SparseCodes(indices_BK, values_BK, counts_B)
    assert torch.equal(codes.to_dense(values_BF.shape[1]), torch.where(active_BF, values_BF, 0))
    used_BK = torch.arange(codes.k)[None, :] < counts_B[:, None]
    assert not indices_BK[~used_BK].any() and not values_BK[~used_BK].any()


def test_batch_topk_mask_picks_the_largest_of_the_batch():
    pre_BF = torch.tensor([[5.0, -1.0, 0.5], [4.0, 3.0, 2.0]])
    assert selection.batch_topk_mask(pre_BF, 2).tolist() == [[True, False, False], [True, True, True]]
    negative_BF = torch.tensor([[1.0, -2.0], [-3.0, -4.0]])
    assert selection.batch_topk_mask(negative_BF, 2).tolist() == [[True, False], [False, False]]


def test_sparse_codes_round_trip_and_errors():
    dense_BF = torch.tensor([[0.0, 2.0, 0.0, -3.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    codes = SparseCodes.from_dense(dense_BF)
    assert codes.k == 2 and codes.batch_size == 3
    assert codes.counts_B.tolist() == [2, 0, 1]
    assert codes.indices_BK.tolist() == [[3, 1], [0, 0], [0, 0]]
    assert torch.equal(codes.to_dense(4), dense_BF)
    with pytest.raises(ValueError, match="more than k=1"):
        SparseCodes.from_dense(dense_BF, k=1)
    with pytest.raises(TypeError, match="int32"):
        SparseCodes(codes.indices_BK.long(), codes.values_BK, codes.counts_B)
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(3, 3\)"):
        SparseCodes(codes.indices_BK, torch.zeros(3, 3), codes.counts_B)
    with pytest.raises(ValueError, match=r"counts_B \(2,\)"):
        SparseCodes(codes.indices_BK, codes.values_BK, codes.counts_B[:2])


SPECIAL = [float("-inf"), -2.5, -1e-30, -0.0, 0.0, 1e-30, 1.0, 2.5, float("inf")]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(SPECIAL), min_size=1, max_size=30), st.integers(1, 30))
def test_one_topk_over_order_keys_equals_the_two_sorts(values, k):
    """Signed zeros, infinities and ties: the int64 key orders exactly as value desc, index asc."""
    values_BC = torch.tensor(values, dtype=torch.float32)[None, :]
    indices_BC = torch.randperm(values_BC.shape[1])[None, :].to(torch.int32)
    k = min(k, values_BC.shape[1])
    got = selection.merge_topk_candidates(values_BC, indices_BC, k)
    order = selection._order_desc(values_BC.double(), indices_BC)[:, :k]
    assert torch.equal(got[1], indices_BC.gather(1, order))
    assert torch.equal(got[0], values_BC.gather(1, order))
