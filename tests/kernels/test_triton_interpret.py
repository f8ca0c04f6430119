"""Triton kernels against the float64 dense reference: under TRITON_INTERPRET=1 (set in conftest.py)
on CPU-only machines, compiled on the GPU where CUDA is available.

Small shapes and blocks that do not divide them (ragged last blocks in B and F), since the interpreter
is slow; fp32 and fp16 (the interpreter computes bf16 dots wrongly, so the bf16 cases need a GPU).
Tests marked `production_blocks` keep the production tile sizes (the rest shrink them); the
large-offset case needs a GPU with about 20 GB free.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.kernels.kernel_steps import (
    TRITON_DEVICE,
    assert_step_close,
    dense_reference_step,
    make_sae_tensors,
    step_outputs,
)
from vitsae.kernels import SparseCodes, reference, sparse_torch
from vitsae.kernels.functions import SparseDecode, SparseEncode

triton_ops = pytest.importorskip("vitsae.kernels.triton_ops")


SMALL_BLOCKS = {
    "encode_b": 16,
    "encode_f": 64,
    "encode_d": 32,
    "rows_b": 32,
    "rows_d": 64,
    "dot_e": 128,
    "seg_f": 32,
    "seg_heavy": 4,
}
production_blocks = pytest.mark.production_blocks


@pytest.fixture(autouse=True)
def _blocks(monkeypatch, request):
    """Small tiles unless the test is marked `production_blocks`; a fresh ReLU width memory each test."""
    if request.node.get_closest_marker("production_blocks") is None:
        monkeypatch.setattr(triton_ops, "BLOCKS", SMALL_BLOCKS)
    monkeypatch.setattr(triton_ops, "_relu_width", {})


def triton_step(t, activation, k, precision="float32"):
    threshold = t["threshold"].float() if activation == "jumprelu" else None

    def run(x, W_enc, b_enc, b_dec, W_dec):
        values, indices, counts, l1, fire = SparseEncode.apply(
            triton_ops, activation, k, threshold, x, W_enc, b_enc, b_dec, W_dec.norm(dim=1), precision
        )
        return SparseDecode.apply(triton_ops, indices, counts, values, W_dec, b_dec), l1, fire

    return step_outputs(t, run)


@pytest.mark.parametrize(
    ("B", "D", "F", "activation", "k"),
    [
        (23, 48, 150, "topk", 1),
        (12, 80, 100, "topk", 40),
        (31, 56, 110, "relu", None),
        (12, 64, 100, "jumprelu", None),
        (10, 48, 96, "batchtopk", 3),
    ],
)
def test_triton_step_matches_float64_reference(B, D, F, activation, k):
    t = make_sae_tensors(B, D, F, dtype=torch.float32, seed=B, device=TRITON_DEVICE)
    want = dense_reference_step(t, activation, k)
    assert_step_close(triton_step(t, activation, k), want, rtol=1e-4, atol=1e-4)


@production_blocks
@pytest.mark.parametrize(
    ("B", "D", "F", "activation", "k"),
    [(70, 80, 300, "topk", 8), (70, 40, 300, "relu", None), (66, 48, 260, "batchtopk", 4)],
)
def test_production_blocks_match_float64_reference(B, D, F, activation, k):
    """The production tiles (64 x 128 x 32 encoder, 16-feature segments): several programs per axis."""
    t = make_sae_tensors(B, D, F, dtype=torch.float32, seed=F, device=TRITON_DEVICE)
    want = dense_reference_step(t, activation, k)
    assert_step_close(triton_step(t, activation, k), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("blocks", ["small", pytest.param("production", marks=production_blocks)])
def test_skewed_feature_counts_take_the_heavy_path(blocks):
    """Feature 0 fires on every row (a dense latent): more entries than seg_heavy, so its gradient rows
    come from the dense matmul while the rest go through the segment kernel."""
    B = 140 if blocks == "production" else 24
    t = make_sae_tensors(B, 40, 200, dtype=torch.float32, seed=5, device=TRITON_DEVICE)
    t["b_enc"][0] = 20.0
    want = dense_reference_step(t, "topk", 6)
    assert int(want["fire"][0]) == B > triton_ops.BLOCKS["seg_heavy"]
    assert_step_close(triton_step(t, "topk", 6), want, rtol=1e-4, atol=1e-4)


def count_recomputed_rows(monkeypatch) -> list[int]:
    """Patch the dense row fallback to record how many rows each call recomputes."""
    rows, real = [], triton_ops._exact_candidates
    monkeypatch.setattr(triton_ops, "_exact_candidates", lambda x, *a: rows.append(x.shape[0]) or real(x, *a))
    return rows


def test_rows_whose_block_hides_a_selected_entry_are_recomputed(monkeypatch):
    """TopK with kc < k candidates per block, and every row's top-k in the first block: the exactness
    check must catch every row and recompute it densely (BatchTopK: the dominating-row test below)."""
    F, k = 1000, 16
    assert triton_ops.candidates_per_block(k, F, SMALL_BLOCKS["encode_f"]) < k
    t = make_sae_tensors(12, 32, F, dtype=torch.float32, seed=3, device=TRITON_DEVICE)
    t["b_enc"][:k] += 6.0
    want = dense_reference_step(t, "topk", k)
    recomputed = count_recomputed_rows(monkeypatch)
    assert_step_close(triton_step(t, "topk", k), want, rtol=1e-4, atol=1e-4)
    assert recomputed == [12]  # every row, once


@settings(max_examples=200, deadline=None)
@given(per_row=st.integers(1, 5000), n_features=st.integers(1, 70000), block_f=st.sampled_from([64, 128]))
def test_candidate_buffer_holds_a_row_and_stays_small(per_row, n_features, block_f):
    per_row = min(per_row, n_features)
    kc = triton_ops.candidates_per_block(per_row, n_features, block_f)
    n_blocks = -(-n_features // block_f)
    assert 1 <= kc <= min(per_row, block_f)
    assert n_blocks * kc >= per_row  # a recomputed row's exact top-C always covers its top per_row
    assert kc <= 4 + -(-4 * per_row * block_f // n_features)


def test_relu_overflow_reruns_with_room_for_every_active_feature(monkeypatch):
    monkeypatch.setattr(triton_ops, "INITIAL_MAX_K", 2)
    t = make_sae_tensors(20, 32, 200, dtype=torch.float32, seed=7, device=TRITON_DEVICE)
    t["b_enc"] -= 2.0  # a few percent active: sparse enough to stay on the sparse encoder
    launches = []
    real_launch = triton_ops._launch_encode
    monkeypatch.setattr(triton_ops, "_launch_encode", lambda *a: launches.append(a[-2]) or real_launch(*a))
    pre = reference.pre_activations(*(t[n].double() for n in ("x", "W_enc", "b_enc", "b_dec")))
    for _ in range(2):
        indices, values, counts, _, fire = triton_ops.encode_select(
            t["x"], t["W_enc"], t["b_enc"], t["b_dec"], "relu", None, None, None
        )
        assert int(counts.max()) > 2
        assert torch.equal(counts.long(), (pre > 0).sum(dim=1))
        assert torch.equal(fire, (pre > 0).sum(dim=0))
        dense = SparseCodes(indices, values, counts).to_dense(200).double()
        torch.testing.assert_close(dense, torch.relu(pre), rtol=1e-5, atol=1e-5)
    widest = int((pre > 0).sum(dim=1).max())
    assert widest <= 0.1 * 200 and len(launches) == 3  # one rerun on the first call, none after
    assert launches[1] == launches[2] <= 200


def test_dense_relu_codes_take_the_dense_path(monkeypatch):
    """At initialisation about half the features fire: from the first launch that sees it, the encoder
    and the backward products run as dense matmuls (no B x max_k slot buffers, no reruns)."""
    t = make_sae_tensors(20, 32, 70, dtype=torch.float32, seed=8, device=TRITON_DEVICE)
    want = dense_reference_step(t, "relu", None)
    launches = []
    real_launch = triton_ops._launch_encode
    monkeypatch.setattr(triton_ops, "_launch_encode", lambda *a: launches.append(a[-2]) or real_launch(*a))
    assert_step_close(triton_step(t, "relu", None), want, rtol=1e-4, atol=1e-4)
    assert launches == [triton_ops.INITIAL_MAX_K]  # the first launch saw dense codes: no rerun
    args = (t["x"], t["W_enc"], t["b_enc"], t["b_dec"], "relu", None, None, None)
    first, again = triton_ops.encode_select(*args), triton_ops.encode_select(*args)
    assert launches == [triton_ops.INITIAL_MAX_K] * 2  # the same weights again: straight to dense
    # `first` came from the sparse kernel (its launch held every row's codes), `again` from the dense
    # matmul: the same codes, their values summed in another order (equal to within rounding)
    assert torch.equal(first[0], again[0]) and torch.equal(first[2], again[2])
    torch.testing.assert_close(first[1], again[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("precision", ["float16", "tf32"])
def test_encoder_precisions_match_the_reference_on_representable_inputs(precision):
    """x and W_enc exactly representable in the precision: the step must match float64 as tightly as
    fp32 does (so any difference is the rounding itself, which test_sparse_torch measures)."""
    t = make_sae_tensors(23, 48, 150, dtype=torch.float32, seed=4, device=TRITON_DEVICE)
    for name in ("x", "W_enc"):
        t[name] = t[name].to(torch.float16).float() if precision == "float16" else t[name]
    want = dense_reference_step(t, "topk", 5)
    tol = 1e-4 if precision == "float16" or not torch.cuda.is_available() else 2e-2  # TF32: 10-bit mantissa
    assert_step_close(triton_step(t, "topk", 5, precision), want, rtol=tol, atol=tol)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="bf16 Triton dots need a GPU (wrong in the interpreter)"
)
@production_blocks
def test_bfloat16_step_at_production_blocks():
    t = make_sae_tensors(130, 64, 400, dtype=torch.float32, seed=9, device=TRITON_DEVICE)
    for name in ("x", "W_enc"):
        t[name] = t[name].to(torch.bfloat16).float()
    want = dense_reference_step(t, "topk", 8)
    assert_step_close(triton_step(t, "topk", 8, "bfloat16"), want, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a GPU with about 20 GB free (B x max_k > 2**31)"
)
@production_blocks
def test_offsets_beyond_int32():
    """ReLU slots at rows*max_k > 2**31: only the rows past 131,072 are active, with a known pattern."""
    B, D, F, max_k = 131_200, 32, 256, 16_384
    x = torch.zeros(B, D, device="cuda")
    x[131_072:] = 1.0
    W = torch.zeros(D, F, device="cuda")
    W[:, :200] = 1.0
    bias = torch.full((F,), -1.0, device="cuda")
    x_k, W_k, dot = triton_ops._operands(x, W, "float32")
    idx, val, count, _, fire = triton_ops._launch_encode(x_k, W_k, dot, bias, None, None, 0, max_k, 1)
    assert int(count[:131_072].max()) == 0 and torch.all(count[131_072:] == 200)
    got = torch.sort(idx[131_072:, :200].long(), dim=1).values
    assert torch.equal(got, torch.arange(200, device="cuda").expand_as(got))
    assert torch.all(val[131_072:, :200] == D - 1.0)


HALF_TYPES = [
    torch.float16,
    pytest.param(
        torch.bfloat16, marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 needs a GPU")
    ),
]


@pytest.mark.parametrize("half", HALF_TYPES)
@pytest.mark.parametrize("activation,k", [("topk", 6), ("relu", None)])
def test_half_inputs_accumulate_in_fp32(activation, k, half):
    t = make_sae_tensors(18, 64, 120, dtype=torch.float32, seed=11, device=TRITON_DEVICE)
    x_half = t["x"].to(half)
    W_enc_half = t["W_enc"].to(half)
    got = triton_ops.encode_select(x_half, t["W_enc"], t["b_enc"], t["b_dec"], activation, k, None, None)
    # Same arithmetic as the kernel's half-precision dot: half operands, exact (float64) accumulation.
    bias = t["b_enc"].double() - t["b_dec"].double() @ t["W_enc"].double()
    pre = x_half.double() @ W_enc_half.double() + bias
    eye, zeros = torch.eye(120, dtype=pre.dtype, device=pre.device), pre.new_zeros(120)
    want = sparse_torch.encode_select(pre, eye, zeros, zeros, activation, k, None, None)
    # The same features and values; their order may differ at near-ties after GPU (fp32) summation.
    n = got[0].shape[1]
    assert torch.equal(got[2], want[2]) and n == want[0].shape[1]
    dense = [SparseCodes(*codes[:3]).to_dense(120).double() for codes in (got, want)]
    assert torch.equal(dense[0] != 0, dense[1] != 0)
    torch.testing.assert_close(dense[0], dense[1], rtol=1e-5, atol=1e-5)


def test_sparse_primitives_match_sparse_torch_on_shared_codes():
    t = make_sae_tensors(27, 72, 110, dtype=torch.float32, seed=13, device=TRITON_DEVICE)
    indices, values, counts, *_ = sparse_torch.encode_select(
        t["x"], t["W_enc"], t["b_enc"], t["b_dec"], "topk", 9, None, None
    )
    for rows in (t["W_dec"], t["W_enc"].T):
        torch.testing.assert_close(
            triton_ops.gather_rows_sum(indices, values, counts, rows),
            sparse_torch.gather_rows_sum(indices, values, counts, rows),
        )
    torch.testing.assert_close(
        triton_ops.gather_dot(indices, counts, t["d_xhat"], t["W_dec"]),
        sparse_torch.gather_dot(indices, counts, t["d_xhat"], t["W_dec"]),
    )
    got_out, got_sums = triton_ops.scatter_outer(indices, values, counts, t["d_xhat"], 110)
    want_out, want_sums = sparse_torch.scatter_outer(indices, values, counts, t["d_xhat"], 110)
    torch.testing.assert_close(got_out, want_out)
    torch.testing.assert_close(got_sums, want_sums)
    again_out, again_sums = triton_ops.scatter_outer(indices, values, counts, t["d_xhat"], 110)
    assert torch.equal(again_out, got_out) and torch.equal(again_sums, got_sums)


def test_batchtopk_row_that_dominates_the_batch_is_exact(monkeypatch):
    """One row's pre-activations dwarf the rest, so the batch's k*B picks take all of that row: its
    blocks' last candidates reach the cut-off, and its recomputed candidates (C = 3 x 52 > F = 150,
    padded with -inf) must still give the exact selection."""
    t = make_sae_tensors(12, 32, 150, dtype=torch.float32, seed=6, device=TRITON_DEVICE)
    assert triton_ops.candidates_per_block(4 * 13, 150, SMALL_BLOCKS["encode_f"]) == 52
    u_D = torch.nn.functional.normalize(torch.randn(32, generator=torch.Generator().manual_seed(0)), dim=0)
    t["W_enc"] += 0.5 * u_D.to(TRITON_DEVICE)[:, None]
    t["x"][3] = 100.0 * u_D.to(TRITON_DEVICE)  # row 3: every pre-activation about +50
    want = dense_reference_step(t, "batchtopk", 13)
    assert int(want["fire"].sum()) == 12 * 13 and bool((want["x_hat"][3] != 0).any())
    recomputed = count_recomputed_rows(monkeypatch)
    assert_step_close(triton_step(t, "batchtopk", 13), want, rtol=1e-4, atol=1e-4)
    assert recomputed == [1]
