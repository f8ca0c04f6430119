"""Triton kernels against the float64 dense reference: under TRITON_INTERPRET=1 (set in conftest.py)
on CPU-only machines, compiled on the GPU where CUDA is available.

Small shapes and blocks that do not divide them (ragged last blocks in B and F), since the interpreter
is slow; fp32 and fp16 (the interpreter has no bf16, so the bf16 case needs a GPU).
"""

import pytest
import torch

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


@pytest.fixture(autouse=True)
def _small_blocks(monkeypatch):
    blocks = {
        "encode_b": 16,
        "encode_f": 64,
        "encode_d": 32,
        "rows_b": 32,
        "rows_d": 64,
        "dot_e": 128,
        "seg_f": 32,
    }
    monkeypatch.setattr(triton_ops, "BLOCKS", blocks)


def triton_step(t, activation, k):
    threshold = t["threshold"].float() if activation == "jumprelu" else None

    def run(x, W_enc, b_enc, b_dec, W_dec):
        values, indices, counts, l1, fire = SparseEncode.apply(
            triton_ops, activation, k, threshold, x, W_enc, b_enc, b_dec, W_dec.norm(dim=1)
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


def test_relu_overflow_reruns_with_room_for_every_active_feature(monkeypatch):
    monkeypatch.setattr(triton_ops, "INITIAL_MAX_K", 2)
    t = make_sae_tensors(20, 32, 70, dtype=torch.float32, seed=7, device=TRITON_DEVICE)
    indices, values, counts, _, fire = triton_ops.encode_select(
        t["x"], t["W_enc"], t["b_enc"], t["b_dec"], "relu", None, None, None
    )
    pre = reference.pre_activations(*(t[n].double() for n in ("x", "W_enc", "b_enc", "b_dec")))
    assert int(counts.max()) > 2
    assert torch.equal(counts.long(), (pre > 0).sum(dim=1))
    assert torch.equal(fire, (pre > 0).sum(dim=0))
    dense = SparseCodes(indices, values, counts).to_dense(70).double()
    torch.testing.assert_close(dense, torch.relu(pre), rtol=1e-5, atol=1e-5)


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
    assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])
    torch.testing.assert_close(got[1].double(), want[1], rtol=1e-5, atol=1e-5)


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
