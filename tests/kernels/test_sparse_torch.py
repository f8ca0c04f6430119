"""The sparse PyTorch path (CPU) against the float64 dense reference, forward and backward."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.kernels.kernel_steps import assert_step_close, dense_reference_step, make_sae_tensors, step_outputs
from vitsae.kernels import SparseCodes, api, sparse_torch


def sparse_step(t, activation, k, backend="sparse"):
    threshold = t["threshold"] if activation == "jumprelu" else None

    def run(x, W_enc, b_enc, b_dec, W_dec):
        enc = api.encode(
            x,
            W_enc,
            b_enc,
            b_dec,
            activation=activation,
            k=k,
            threshold_F=threshold,
            l1_weights_F=W_dec.norm(dim=1),
            backend=backend,
        )
        return api.decode(enc.codes, W_dec, b_dec, backend=backend), enc.l1_B, enc.fire_counts_F

    return step_outputs(t, run)


@pytest.mark.parametrize(
    ("B", "D", "F", "activation", "k"),
    [
        (37, 768, 1000, "topk", 1),
        (29, 1152, 700, "topk", 350),
        (33, 1280, 600, "topk", 32),
        (21, 768, 500, "relu", None),
        (19, 1152, 333, "jumprelu", None),
        (25, 1280, 450, "batchtopk", 7),
    ],
)
@pytest.mark.parametrize("force", ["sparse", "dense"])
def test_sparse_step_matches_float64_reference(monkeypatch, B, D, F, activation, k, force):
    # Exercise both sides of the measured density switch inside the sparse products.
    monkeypatch.setattr(sparse_torch, "DENSE_DENSITY_THRESHOLD", 2.0 if force == "sparse" else -1.0)
    t = make_sae_tensors(B, D, F)
    want = dense_reference_step(t, activation, k)
    assert_step_close(sparse_step(t, activation, k), want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("activation,k", [("topk", 16), ("relu", None)])
def test_float32_sparse_step_is_close_to_float64_reference(activation, k):
    t = make_sae_tensors(40, 768, 1500, dtype=torch.float32, seed=3)
    want = dense_reference_step(t, activation, k)
    assert_step_close(sparse_step(t, activation, k), want, rtol=1e-4, atol=1e-4)


def test_dense_backend_matches_reference_and_auto_picks_dense_for_dense_topk():
    t = make_sae_tensors(17, 64, 90, seed=1)
    assert_step_close(
        sparse_step(t, "topk", 5, backend="dense"), dense_reference_step(t, "topk", 5), rtol=1e-12, atol=1e-12
    )
    assert api.resolve_backend("auto", "topk", 60, 90) == "dense"
    assert api.resolve_backend("auto", "topk", 2, 90) == "sparse"
    assert api.resolve_backend("sparse", "topk", 60, 90) == "sparse"
    assert api.resolve_backend("auto", "relu", None, 90) == "sparse"


def test_sparse_backward_is_deterministic(monkeypatch):
    monkeypatch.setattr(sparse_torch, "DENSE_DENSITY_THRESHOLD", 2.0)
    t = make_sae_tensors(64, 96, 400, dtype=torch.float32, seed=5)
    first, second = sparse_step(t, "topk", 8), sparse_step(t, "topk", 8)
    for name in first:
        assert torch.equal(first[name], second[name]), name


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_decode_without_bias_is_the_codes_times_the_decoder(backend):
    t = make_sae_tensors(9, 40, 70, seed=4)
    codes = api.encode(t["x"], t["W_enc"], t["b_enc"], t["b_dec"], activation="topk", k=5).codes
    want = codes.to_dense(70) @ t["W_dec"]
    torch.testing.assert_close(api.decode(codes, t["W_dec"], None, backend=backend), want)


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_decode_of_codes_with_padding_between_active_slots(backend):
    # A TopK whose ReLU zeroed a slot in place: the active slots are not the first counts_B[b] ones.
    indices_BK = torch.tensor([[4, 0, 2], [1, 3, 0]], dtype=torch.int32)
    values_BK = torch.tensor([[0.5, 0.0, 0.3], [0.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    codes = SparseCodes(indices_BK, values_BK, torch.tensor([2, 0], dtype=torch.int32))
    W_dec = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    x_hat = api.decode(codes, W_dec, None, backend=backend)
    x_hat.square().sum().backward()
    dense_codes = torch.tensor([[0.0, 0.0, 0.3, 0.0, 0.5], [0.0] * 5], dtype=torch.float64)
    torch.testing.assert_close(x_hat, dense_codes @ W_dec)
    W_ref = W_dec.detach().clone().requires_grad_()
    (dense_codes @ W_ref).square().sum().backward()
    torch.testing.assert_close(W_dec.grad, W_ref.grad)


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_codes_hold_k_slots_with_zero_padding_for_negative_topk(backend):
    t = make_sae_tensors(8, 32, 50, seed=2)
    negative_bias = t["b_enc"] - 10.0
    enc = api.encode(t["x"], t["W_enc"], negative_bias, t["b_dec"], activation="topk", k=4, backend=backend)
    assert enc.codes.k == 4 and int(enc.codes.counts_B.max()) == 0
    assert not enc.codes.indices_BK.any() and not enc.codes.values_BK.any()
    assert enc.l1_B is None


def test_bad_arguments_are_named():
    t = make_sae_tensors(4, 8, 12)
    args = (t["x"], t["W_enc"], t["b_enc"], t["b_dec"])
    with pytest.raises(ValueError, match="dense, sparse, auto"):
        api.encode(*args, activation="topk", k=2, backend="fast")
    with pytest.raises(ValueError, match="relu, jumprelu, topk, batchtopk"):
        api.encode(*args, activation="softmax")
    with pytest.raises(ValueError, match=r"x \(4, 9\) does not match W_enc \(8, 12\)"):
        api.encode(torch.zeros(4, 9, dtype=torch.float64), *args[1:], activation="relu")
    with pytest.raises(ValueError, match=r"b_enc \(11,\) does not match W_enc \(8, 12\)"):
        api.encode(t["x"], t["W_enc"], t["b_enc"][:11], t["b_dec"], activation="relu")
    with pytest.raises(ValueError, match="threshold as a constant"):
        api.encode(*args, activation="jumprelu", threshold_F=t["threshold"].requires_grad_())
    codes = api.encode(*args, activation="topk", k=2).codes
    with pytest.raises(ValueError, match=r"b_dec \(7,\) does not match W_dec \(12, 8\)"):
        api.decode(codes, t["W_dec"], t["b_dec"][:7])


class _DenseAllocations(TorchDispatchMode):
    """Records the shapes of the strided tensors every op returns."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                self.shapes.append(tuple(t.shape))
        return out


@pytest.mark.parametrize("activation,k", [("topk", 4), ("relu", None)])
def test_sparse_decode_and_backward_allocate_nothing_of_size_b_by_f(monkeypatch, activation, k):
    monkeypatch.setattr(sparse_torch, "DENSE_DENSITY_THRESHOLD", 2.0)
    B, D, F = 64, 24, 700
    t = make_sae_tensors(B, D, F, dtype=torch.float32, seed=6)
    t["b_enc"] -= 2.0  # about 2% of the ReLU pre-activations positive
    leaves = {n: t[n].clone().requires_grad_() for n in ("W_enc", "b_enc", "b_dec", "W_dec")}
    enc = api.encode(
        t["x"],
        leaves["W_enc"],
        leaves["b_enc"],
        leaves["b_dec"],
        activation=activation,
        k=k,
        backend="sparse",
    )
    with _DenseAllocations() as recorder:
        x_hat = api.decode(enc.codes, leaves["W_dec"], leaves["b_dec"], backend="sparse")
        (x_hat * t["d_xhat"]).sum().backward()
    assert all(leaves[n].grad is not None for n in leaves)
    too_big = [s for s in recorder.shapes if torch.Size(s).numel() >= B * F]
    assert not too_big, too_big


def test_unknown_encoder_precision_is_named():
    t = make_sae_tensors(4, 8, 12)
    with pytest.raises(ValueError, match="auto, float32, tf32, bfloat16, float16"):
        api.encode(t["x"], t["W_enc"], t["b_enc"], t["b_dec"], activation="topk", k=2, precision="fp8")
    assert api.resolve_precision("auto", torch.device("cpu")) == "float32"
    assert api.resolve_precision("auto", torch.device("cuda")) == "bfloat16"


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_half_encoder_precision_rounds_the_operands_and_accumulates_in_float32(precision):
    """What the GPU kernel computes with half operands (up to summation order), and how far from float32."""
    t = make_sae_tensors(64, 768, 512, dtype=torch.float32, seed=2)
    zero_b_dec = torch.zeros(768)  # the folded bias b_enc - b_dec W_enc stays in float32 on every path
    args = (t["x"], t["W_enc"], t["b_enc"], zero_b_dec, "relu", None, None, None)
    got = sparse_torch.encode_select(*args, precision=precision)
    half = getattr(torch, precision)
    rounded = (t["x"].to(half).float(), t["W_enc"].to(half).float(), *args[2:])
    want = sparse_torch.encode_select(*rounded, precision="float32")
    assert all(torch.equal(g, w) for g, w in zip(got[:3], want[:3], strict=True))
    exact = sparse_torch.encode_select(*args, precision="float32")
    codes = [SparseCodes(*out[:3]).to_dense(512) for out in (got, exact)]
    # Pre-activations are O(1): bf16 keeps 8 bits, fp16 11, so errors of a few 1e-3 / 1e-4 over D=768.
    tol = 2e-2 if precision == "bfloat16" else 3e-3
    assert (codes[0] - codes[1]).abs().max() < tol


def test_b_dec_gradient_does_not_gather_grad_x_when_x_needs_none(monkeypatch):
    """d b_dec = -W_enc (sum_b d_pre_b): the B x D gather over W_enc's columns runs only for x's own grad."""
    calls = []
    real = sparse_torch.gather_rows_sum
    monkeypatch.setattr(sparse_torch, "gather_rows_sum", lambda *a: calls.append(a[3].shape) or real(*a))
    t = make_sae_tensors(16, 24, 80, dtype=torch.float32)
    b_dec = t["b_dec"].requires_grad_()
    for x_grad in (False, True):
        calls.clear()
        x = t["x"].clone().requires_grad_(x_grad)
        enc = api.encode(x, t["W_enc"], t["b_enc"], b_dec, activation="topk", k=3, backend="sparse")
        api.decode(enc.codes, t["W_dec"], b_dec, backend="sparse").square().sum().backward()
        assert calls.count((80, 24)) == 1 + x_grad  # the decode's gather, plus grad x when x needs it
