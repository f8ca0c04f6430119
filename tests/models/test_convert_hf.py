"""Every converted family equals its transformers reference: output and every layer's residual stream."""

from __future__ import annotations

import inspect

import pytest
import torch

from vitsae.models.convert_hf import hooked_vit_from_hf

ATOL = 1e-5


def _compare(reference_output, ref, model, pixels, interpolate=False):
    with torch.no_grad():
        want_out, want_hidden = reference_output(ref, pixels, interpolate)
        got_out, cache = model.run_with_cache(pixels)  # hooks on every pattern: explicit attention
        fused_out = model(pixels)  # no hooks: the fused attention kernel
    assert got_out.shape == want_out.shape
    assert (got_out - want_out).abs().max().item() < ATOL
    assert (fused_out - want_out).abs().max().item() < ATOL
    n_layers = model.cfg.n_layers
    assert len(want_hidden) == n_layers + 1
    for layer in range(n_layers):
        got = cache[f"blocks.{layer}.hook_resid_pre"]
        assert (got - want_hidden[layer]).abs().max().item() < ATOL, layer
    last = cache[f"blocks.{n_layers - 1}.hook_resid_post"]
    assert (last - want_hidden[n_layers]).abs().max().item() < ATOL


def test_matches_reference_at_config_size(hf_vit, hf_reference):
    _, ref = hf_vit
    model = hooked_vit_from_hf(ref)
    _compare(hf_reference, ref, model, torch.randn(3, 3, 32, 32))


def test_matches_reference_at_other_size(hf_vit, hf_reference):
    name, ref = hf_vit
    model = hooked_vit_from_hf(ref)
    pixels = torch.randn(2, 3, 48, 40)  # non-square, 6x5 patches instead of 4x4
    if name.startswith("dinov2") or "interpolate_pos_encoding" in inspect.signature(ref.forward).parameters:
        _compare(hf_reference, ref, model, pixels, interpolate=True)
    else:
        pytest.skip(f"{type(ref).__name__} cannot run at another size")


def test_refuses_unsupported_class():
    import transformers as hf

    ref = hf.ResNetModel(hf.ResNetConfig(hidden_sizes=[8, 16], depths=[1, 1], embedding_size=8))
    with pytest.raises(ValueError, match="no HookedViT converter for ResNetModel; supported: .*ViTModel"):
        hooked_vit_from_hf(ref)


def test_swiglu_mlp_hooks(hf_vit_models):
    model = hooked_vit_from_hf(hf_vit_models["dinov2_swiglu"])
    assert model.cfg.gated_mlp and model.cfg.d_mlp == 48  # 2/3 of 64, rounded up to a multiple of 8
    _, cache = model.run_with_cache(torch.randn(1, 3, 32, 32))
    mlp = model.blocks[0].mlp
    gate, linear = cache["blocks.0.mlp.hook_pre"], cache["blocks.0.mlp.hook_pre_linear"]
    torch.testing.assert_close(cache["blocks.0.mlp.hook_post"], torch.nn.functional.silu(gate) * linear)
    torch.testing.assert_close(linear, cache["blocks.0.ln2.hook_normalized"] @ mlp.W_in + mlp.b_in)
    assert model.token_layout("blocks.0.mlp.hook_pre_linear").width == 48
