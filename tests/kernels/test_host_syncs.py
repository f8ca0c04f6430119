"""Device syncs and ATen calls of one sparse training step (Triton path; interpreted on CPU, where
`HostSyncCounter` counts the calls that would block on a GPU). Before the 2026-12 fixes a TopK step
made 10 such calls (12+ on CUDA, where bincount blocks twice) and a ReLU step 10."""

import pytest
import torch

from tests.kernels.kernel_steps import TRITON_DEVICE, make_sae_tensors
from vitsae.kernels.functions import SparseDecode, SparseEncode
from vitsae.kernels.host_syncs import HostSyncCounter

triton_ops = pytest.importorskip("vitsae.kernels.triton_ops")


def one_step(t, leaves, activation, k):
    values, indices, counts, _, _ = SparseEncode.apply(
        triton_ops,
        activation,
        k,
        None,
        t["x"],
        leaves["W_enc"],
        leaves["b_enc"],
        leaves["b_dec"],
        None,
        "float32",
    )
    x_hat = SparseDecode.apply(triton_ops, indices, counts, values, leaves["W_dec"], leaves["b_dec"])
    ((x_hat - t["x"]) ** 2).sum().backward()


@pytest.mark.parametrize(
    ("activation", "k", "bias", "most"),
    [
        ("topk", 8, 0.0, 2),  # one nonzero per scatter_outer (heavy features); exact candidates: no check
        ("topk", 32, 0.0, 3),  # kc = 20 < k: plus the candidate exactness check
        ("relu", None, -2.0, 3),  # the widest row, and the two scatter_outer
    ],
)
def test_sparse_step_syncs(monkeypatch, activation, k, bias, most):
    monkeypatch.setattr(triton_ops, "_relu_width", {})
    t = make_sae_tensors(64, 32, 1024, dtype=torch.float32, device=TRITON_DEVICE)
    t["b_enc"] += bias
    leaves = {n: t[n].clone().requires_grad_() for n in ("W_enc", "b_enc", "b_dec", "W_dec")}
    one_step(t, leaves, activation, k)  # warm-up (the ReLU width of these weights is learned here)
    with HostSyncCounter() as counter:
        one_step(t, leaves, activation, k)
    assert counter.n_syncs <= most, counter.syncs


def test_counter_sees_the_syncs_it_names():
    x = torch.arange(6.0)
    with HostSyncCounter() as counter:
        bool(x.any())
        x[x > 2]
        torch.nonzero(x)
        torch.bincount(x.long())
    assert counter.syncs == {"_local_scalar_dense": 1, "index": 1, "nonzero": 1, "bincount": 1}
