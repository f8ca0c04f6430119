"""SAE forward maths, initialisation, sparse codes and the JumpReLU straight-through gradients."""

import math

import pytest
import torch

from vitsae.kernels.codes import SparseCodes
from vitsae.sae import ARCHITECTURES, SAEConfig, SparseAutoencoder


def make(architecture="relu", d_in=8, expansion_factor=4, **kw) -> SparseAutoencoder:
    cfg = SAEConfig(d_in=d_in, expansion_factor=expansion_factor, architecture=architecture, k=3, **kw)
    sae = SparseAutoencoder(cfg, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
    return sae


def test_relu_forward_matches_the_formula_in_float64():
    sae = make().double()
    x = torch.randn(5, 8, dtype=torch.float64)
    codes = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    expected = codes @ sae.W_dec + sae.b_dec
    torch.testing.assert_close(sae.encode(x), codes, rtol=0, atol=1e-12)
    torch.testing.assert_close(sae(x), expected, rtol=0, atol=1e-12)


def test_initialisation_decoder_norms_and_encoder_copy():
    relu, topk = make("relu"), make("topk")
    torch.testing.assert_close(relu.W_dec.norm(dim=-1), torch.full((32,), 0.1))
    torch.testing.assert_close(topk.W_dec.norm(dim=-1), torch.ones(32))
    chosen = make("relu", decoder_init_norm=0.5)
    torch.testing.assert_close(chosen.W_dec.norm(dim=-1), torch.full((32,), 0.5))
    assert torch.equal(relu.W_enc, relu.W_dec.T)
    assert relu.W_enc.data_ptr() != relu.W_dec.data_ptr()
    with torch.no_grad():
        relu.W_enc.zero_()
    assert relu.W_dec.abs().sum() > 0


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_sparse_codes_decode_like_dense_codes(architecture):
    sae = make(architecture).eval()
    if architecture == "batchtopk":
        sae.threshold.fill_(0.05)
    x = torch.randn(6, 8)
    codes = sae.encode_sparse(x)
    dense = sae.encode(x)
    assert isinstance(codes, SparseCodes) and codes.indices_BK.dtype == torch.int32
    torch.testing.assert_close(codes.to_dense(sae.cfg.d_sae), dense)
    assert torch.equal(codes.counts_B, (dense != 0).sum(-1).to(torch.int32))
    unused = torch.arange(codes.k) >= codes.counts_B[:, None]
    assert (codes.indices_BK[unused] == 0).all() and (codes.values_BK[unused] == 0).all()
    torch.testing.assert_close(sae.decode_sparse(codes), sae.decode(dense), rtol=1e-5, atol=1e-6)


def test_topk_keeps_the_k_largest_and_backends_agree():
    dense, sparse = make("topk", backend="dense"), make("topk", backend="sparse")
    sparse.load_state_dict(dense.state_dict())
    x = torch.randn(7, 8)
    pre = dense.pre_activations(x)
    codes = dense.encode(x)
    assert ((codes != 0).sum(-1) <= 3).all()
    kth = pre.topk(3, dim=-1).values[:, -1:]
    assert torch.equal(codes != 0, (pre >= kth) & (pre > 0))
    torch.testing.assert_close(sparse(x), dense(x), rtol=1e-5, atol=1e-6)
    out_dense, out_sparse = dense.forward_train(x), sparse.forward_train(x)
    out_dense.recon_BD.square().sum().backward()
    out_sparse.recon_BD.square().sum().backward()
    torch.testing.assert_close(sparse.W_dec.grad, dense.W_dec.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sparse.W_enc.grad, dense.W_enc.grad, rtol=1e-4, atol=1e-5)


def test_batchtopk_trains_on_batch_topk_and_infers_with_its_threshold():
    sae = make("batchtopk", expansion_factor=8).train()
    with torch.no_grad():
        sae.b_enc.fill_(1.0)  # every pre-activation positive, so exactly k * B survive
    x = torch.randn(10, 8)
    codes = sae.encode(x)
    assert int((codes != 0).sum()) == 3 * 10
    smallest = codes[codes != 0].min()
    assert float(sae.threshold) == pytest.approx(float(smallest.detach()))
    sae.encode(x)  # a second batch moves the threshold by the EMA rule, here to the same value
    assert float(sae.threshold) == pytest.approx(float(smallest.detach()))
    sae.eval()
    pre = sae.pre_activations(x)
    assert torch.equal(sae.encode(x), pre * (pre > sae.threshold.float()))


def test_jumprelu_straight_through_gradients_in_float64():
    eps, theta0 = 0.5, 0.3
    sae = make("jumprelu", d_in=4, expansion_factor=2, jumprelu_bandwidth=eps, jumprelu_init_threshold=theta0)
    sae = sae.double()
    x = torch.randn(16, 4, dtype=torch.float64)
    out = sae.forward_train(x)
    codes = sae.encode(x)
    pre, theta = out.pre_BF.detach(), torch.full((8,), theta0, dtype=torch.float64)
    torch.testing.assert_close(codes, pre * (pre > theta))
    torch.testing.assert_close(out.penalty_B, (pre > theta).double().sum(-1))
    assert torch.equal(out.fire_counts_F, (pre > theta).sum(0))

    (codes.sum() + out.penalty_B.sum()).backward()
    window = ((pre - theta) / eps).abs() <= 0.5
    d_codes = (-(theta / eps) * window).sum(0)  # d/dtheta of sum z H(z - theta)
    d_active = (-(1 / eps) * window).sum(0)  # d/dtheta of sum H(z - theta)
    expected = (d_codes + d_active) * theta  # chain rule through theta = exp(log_threshold)
    torch.testing.assert_close(sae.log_threshold.grad, expected)
    # the pre-activations get the ordinary gradient through the kept codes only
    expected_b_enc = (pre > theta).double().sum(0)
    torch.testing.assert_close(sae.b_enc.grad, expected_b_enc)


@pytest.mark.parametrize(
    ("architecture", "training", "world_size", "sparse"),
    [
        ("topk", True, 1, True),
        ("relu", True, 1, True),
        ("batchtopk", True, 1, True),
        ("batchtopk", True, 2, False),  # the global cut-off over ranks runs on the dense path
        ("batchtopk", False, 1, False),  # eval mode applies the learned threshold densely
        ("jumprelu", True, 1, False),  # the threshold's gradient needs dense pre-activations
    ],
)
def test_which_training_steps_run_sparse(architecture, training, world_size, sparse):
    sae = make(architecture, backend="sparse").train(training)
    assert sae.cfg.trains_sparse(training, world_size) is sparse
    if world_size == 1:
        out = sae.forward_train(torch.randn(6, 8))
        assert (out.codes is not None, out.pre_BF is None) == (sparse, sparse)
    assert not make(architecture, backend="dense").cfg.trains_sparse(True, 1)


@pytest.mark.parametrize(
    ("architecture", "k", "resolved"),
    [
        ("topk", 3, "sparse"),
        ("topk", 16, "dense"),  # k / F = 0.5: the selection would be wasted
        # measured: sparse wins at D = 128, F = 2,048 and loses at D = 96, F = 768 (docs/benchmarks.md)
        ("batchtopk", 3, "dense"),
        ("relu", 3, "dense"),
        ("jumprelu", 3, "dense"),  # trains on dense pre-activations
    ],
)
def test_auto_backend_is_sparse_for_topk_only(architecture, k, resolved):
    cfg = SAEConfig(d_in=8, expansion_factor=4, architecture=architecture, k=k, backend="auto")
    assert cfg.resolved_backend == resolved
    assert (
        SAEConfig(
            d_in=8, expansion_factor=4, architecture=architecture, k=k, backend="sparse"
        ).resolved_backend
        == "sparse"
    )


def test_raw_inputs_are_scaled_by_norm_scale():
    sae = make().with_config(norm_scale=0.25)
    x = torch.randn(3, 8)
    torch.testing.assert_close(sae.encode(x), sae.encode(x * 0.25, normalized=True))
    torch.testing.assert_close(sae(x), sae(x * 0.25, normalized=True) / 0.25)
    torch.testing.assert_close(sae.pre_activations(x), sae.pre_activations(x * 0.25, normalized=True))
    codes = sae.encode_sparse(x)
    torch.testing.assert_close(sae.decode_sparse(codes), sae.decode_sparse(codes, normalized=True) / 0.25)
    with pytest.raises(ValueError, match="cannot change"):
        sae.with_config(expansion_factor=2)


def test_decoder_gradient_projection_and_normalisation():
    sae = make("topk")
    sae.forward_train(torch.randn(5, 8)).recon_BD.square().sum().backward()
    sae.project_decoder_grad()
    along = (sae.W_dec.grad * sae.W_dec).sum(-1)
    assert along.abs().max() < 1e-5
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.normalise_decoder()
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(32))


def test_bad_inputs_name_what_is_wrong():
    with pytest.raises(ValueError, match=r"unknown architecture 'gated'; valid: \['relu', 'topk'"):
        SAEConfig(d_in=4, architecture="gated")
    with pytest.raises(ValueError, match=r"unknown backend 'triton'; valid"):
        SAEConfig(d_in=4, backend="triton")
    with pytest.raises(ValueError, match=r"k must be in \[1, d_sae=16\]"):
        SAEConfig(d_in=4, expansion_factor=4, architecture="topk", k=17)
    with pytest.raises(ValueError, match=r"width 6 \(shape \(2, 6\)\) but the SAE expects d_in=8"):
        make().encode(torch.zeros(2, 6))


def test_b_dec_initialisation_methods():
    x = torch.randn(50, 8) + 3.0
    for method, expected in (("mean", x.mean(0)), ("zeros", torch.zeros(8))):
        sae = make(b_dec_init=method)
        sae.init_b_dec(x)
        torch.testing.assert_close(sae.b_dec.detach(), expected)
    sae = make()
    sae.init_b_dec(x)
    assert not math.isclose(float((sae.b_dec.detach() - x.mean(0)).norm()), 0.0, abs_tol=1e-6)
