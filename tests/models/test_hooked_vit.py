"""HookedViT behaves as a TransformerLens model and honours the stage contract."""

from __future__ import annotations

import math

import pytest
import torch

from tests.models.conftest import captured_pixels
from vitsae.models import HookedViT, HookedViTConfig, TokenLayout, hooked_vit_from_hf


@pytest.fixture
def model(hf_vit_models) -> HookedViT:
    """A converted DINOv2 with 2 registers and a classifier: CLS, registers, layer scale, all non-trivial."""
    return hooked_vit_from_hf(hf_vit_models["dinov2_reg_cls"])


@pytest.fixture
def pixels() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32)


def test_hook_names_follow_design_and_forward_order(model):
    names = model.hook_names()
    for name in ("hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre", "blocks.0.attn.hook_pattern",
                 "blocks.0.hook_attn_out", "blocks.0.hook_resid_mid", "blocks.0.mlp.hook_post",
                 "blocks.0.hook_mlp_out", "blocks.1.hook_resid_post", "ln_final.hook_normalized",
                 "hook_logits"):  # fmt: skip
        assert name in names
    order = [names.index(n) for n in ("blocks.0.hook_resid_pre", "blocks.0.attn.hook_q",
                                      "blocks.0.hook_resid_mid", "blocks.0.mlp.hook_pre",
                                      "blocks.0.hook_resid_post", "blocks.1.hook_resid_pre")]  # fmt: skip
    assert order == sorted(order)


def test_run_with_cache_names_filter_and_shapes(model, pixels):
    logits, cache = model.run_with_cache(pixels, names_filter=lambda n: n.endswith("resid_post"))
    assert sorted(cache) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert cache["blocks.0.hook_resid_post"].shape == (2, 1 + 3 + 16, 32)
    assert logits.shape == (2, 5)
    _, cache = model.run_with_cache(pixels)
    assert cache["blocks.0.attn.hook_pattern"].shape == (2, 4, 20, 20)
    assert cache["blocks.0.attn.hook_q"].shape == (2, 20, 4, 8)
    assert cache["blocks.0.mlp.hook_post"].shape == (2, 20, 64)


def test_hook_edits_output_and_is_removed_after_run(model, pixels):
    def zero_last_resid(resid, hook):
        return torch.zeros_like(resid)

    plain = model(pixels)
    edited = model.run_with_hooks(pixels, fwd_hooks=[("blocks.1.hook_resid_post", zero_last_resid)])
    # zero residual -> final LayerNorm gives its bias everywhere -> logits = W_U^T [b; b] + b_U
    ln_b = model.ln_final.b
    expected = torch.cat([ln_b, ln_b]) @ model.W_U + model.b_U
    torch.testing.assert_close(edited, expected.expand(2, -1), rtol=0, atol=1e-5)
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())
    torch.testing.assert_close(model(pixels), plain, rtol=0, atol=0)


def test_stop_at_layer_returns_residual_stream(model, pixels):
    _, cache = model.run_with_cache(pixels)
    torch.testing.assert_close(model(pixels, stop_at_layer=1), cache["blocks.0.hook_resid_post"])
    torch.testing.assert_close(model(pixels, stop_at_layer=0), cache["blocks.0.hook_resid_pre"])
    torch.testing.assert_close(model(pixels, stop_at_layer=-1), cache["blocks.0.hook_resid_post"])


def test_collect_equals_run_with_cache_token_shaped(model, pixels):
    names = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z", "blocks.1.attn.hook_pattern",
             "blocks.0.mlp.hook_pre", "hook_embed", "hook_logits"]  # fmt: skip
    got = model.collect(pixels, names)
    _, cache = model.run_with_cache(pixels)
    assert list(got) == names
    torch.testing.assert_close(got["blocks.0.hook_resid_post"], cache["blocks.0.hook_resid_post"])
    torch.testing.assert_close(got["blocks.1.attn.hook_z"], cache["blocks.1.attn.hook_z"].flatten(2))
    pattern = cache["blocks.1.attn.hook_pattern"]  # [B, H, Tq, Tk] -> [B, Tq, H*Tk]
    torch.testing.assert_close(got["blocks.1.attn.hook_pattern"][:, 5, 20:40], pattern[:, 1, 5, :])
    torch.testing.assert_close(got["hook_logits"], cache["hook_logits"][:, None])
    for name in names:
        layout = model.token_layout(name)
        assert got[name].shape == (2, layout.n_tokens, layout.width), name


def test_collect_stops_after_deepest_requested_block(model, pixels):
    calls = []
    for i, block in enumerate(model.blocks):
        block.register_forward_hook(lambda *_, i=i: calls.append(i))
    model.ln_final.register_forward_hook(lambda *_: calls.append("final"))
    model.collect(pixels, ["blocks.0.hook_resid_post", "hook_embed"])
    assert calls == [0]
    calls.clear()
    model.collect(pixels, ["ln_final.hook_normalized"])
    assert calls == [0, 1, "final"]


def test_token_layout(model):
    assert model.token_layout("blocks.1.hook_resid_post") == TokenLayout(1, 3, (4, 4), 32)
    assert model.token_layout("hook_embed") == TokenLayout(0, 0, (4, 4), 32)
    assert model.token_layout("blocks.0.mlp.hook_post").width == 64
    assert model.token_layout("hook_logits") == TokenLayout(1, 0, None, 5)
    big = model.token_layout("blocks.0.hook_resid_pre", image_hw=(48, 40))
    assert big.grid_hw == (6, 5) and big.n_tokens == 1 + 3 + 30
    assert big.patch_of(4) == (0, 0) and big.patch_of(4 + 7) == (1, 2) and big.patch_of(2) is None
    with pytest.raises(ValueError, match="not a multiple of the patch size 8"):
        model.token_layout("hook_embed", image_hw=(30, 32))


def test_unknown_hook_names_list_close_matches_and_valid_ones(model, pixels):
    with pytest.raises(
        ValueError, match=r"'blocks.0.hook_resid_psot' \(did you mean 'blocks.0.hook_resid_post'"
    ) as err:
        model.collect(pixels, ["blocks.0.hook_resid_psot"])
    assert "Valid hook names: hook_embed" in str(err.value)
    with pytest.raises(ValueError, match="unknown hook name"):
        model.token_layout("blocks.9.hook_resid_post")


def test_bad_pixels_name_the_shape(model):
    with pytest.raises(ValueError, match=r"expected pixels of shape \(B, 3, H, W\), got \(2, 1, 32, 32\)"):
        model(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"image size \(30, 32\) is not a multiple of the patch size 8"):
        model(torch.zeros(1, 3, 30, 32))


def test_weight_shapes(model):
    L, H, D, E, M = 2, 4, 32, 8, 64
    assert model.W_Q.shape == model.W_K.shape == model.W_V.shape == (L, H, D, E)
    assert model.W_O.shape == (L, H, E, D)
    assert model.b_Q.shape == (L, H, E) and model.b_O.shape == (L, D)
    assert model.W_in.shape == (L, D, M) and model.W_out.shape == (L, M, D)
    assert model.b_in.shape == (L, M) and model.b_out.shape == (L, D)
    assert model.ln1_w.shape == model.ln2_b.shape == (L, D)
    assert model.W_U.shape == (2 * D, 5) and model.b_U.shape == (5,)
    assert model.QK(1).shape == model.OV(1).shape == (H, D, D)
    assert model.layer_scales()[0].shape == (L, D)


def test_pattern_recomputed_from_weights_matches_hook(model, pixels):
    _, cache = model.run_with_cache(pixels)
    for layer in range(2):
        x = cache[f"blocks.{layer}.ln1.hook_normalized"]
        q = torch.einsum("btd,hde->bhte", x, model.W_Q[layer]) + model.b_Q[layer][None, :, None]
        k = torch.einsum("btd,hde->bhte", x, model.W_K[layer]) + model.b_K[layer][None, :, None]
        pattern = (q @ k.transpose(-1, -2) / math.sqrt(8)).softmax(-1)
        torch.testing.assert_close(pattern, cache[f"blocks.{layer}.attn.hook_pattern"], rtol=0, atol=1e-6)
        # the head outputs, written through W_O and the layer scale, sum to hook_attn_out
        z = cache[f"blocks.{layer}.attn.hook_z"]
        out = torch.einsum("bthe,hed->btd", z, model.W_O[layer]) + model.b_O[layer]
        ls1 = model.layer_scales()[0][layer]
        torch.testing.assert_close(out * ls1, cache[f"blocks.{layer}.hook_attn_out"], rtol=0, atol=1e-5)


def test_weights_hash_is_stable_and_sensitive(model):
    first = model.weights_hash()
    assert first == model.weights_hash() and len(first) == 64
    with torch.no_grad():
        model.blocks[0].mlp.b_in[0] += 1e-3
    assert model.weights_hash() != first


def test_config_checks():
    with pytest.raises(ValueError, match="not divisible by n_heads"):
        HookedViTConfig(d_model=30, n_layers=1, n_heads=4, d_mlp=8)
    with pytest.raises(ValueError, match="needs a class token"):
        HookedViTConfig(d_model=32, n_layers=1, n_heads=4, d_mlp=8, class_token=False, pool="cls")


def test_fresh_model_is_randomly_initialised_and_trainable():
    torch.manual_seed(0)
    cfg = HookedViTConfig(d_model=32, n_layers=1, n_heads=4, d_mlp=64, image_size=(16, 16), patch_size=8,
                          layer_scale=True, head_out=3)  # fmt: skip
    model = HookedViT(cfg)
    assert 0.015 < model.blocks[0].attn.W_Q.std().item() < 0.025
    assert model.blocks[0].attn.b_Q.abs().max() == 0 and model.blocks[0].ln1.w.eq(1).all()
    assert model.blocks[0].ls1.eq(1).all() and model.cls_token.abs().max() > 0
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 16, 16)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().max() > 0, name


def test_unpooled_model_outputs_tokens():
    cfg = HookedViTConfig(d_model=16, n_layers=1, n_heads=2, d_mlp=32, image_size=(16, 16), patch_size=8,
                          class_token=False, pool="none", head_out=3)  # fmt: skip
    model = HookedViT(cfg)
    got = model.collect(torch.randn(2, 3, 16, 16), ["hook_pooled", "hook_logits"])
    assert model.token_layout("hook_logits") == TokenLayout(0, 0, (2, 2), 3)
    assert got["hook_logits"].shape == (2, 4, 3) and got["hook_pooled"].shape == (2, 4, 16)


def test_conv_stem_matches_a_torch_nn_reference_and_round_trips(tmp_path):
    from vitsae.models.io import load_hooked_vit, save_hooked_vit

    torch.manual_seed(0)
    cfg = HookedViTConfig(d_model=16, n_layers=1, n_heads=2, d_mlp=32, image_size=(16, 16), patch_size=4,
                          conv_stem=(6, 10), head_out=3)  # fmt: skip
    model = HookedViT(cfg).double()
    pixels = torch.randn(5, 3, 16, 16, dtype=torch.float64)
    model.train()
    model(pixels)  # one training step's worth of BatchNorm running statistics
    model.eval()
    assert all(layer.running_mean.abs().max() > 0 for layer in model.embed.layers)

    layers: list[torch.nn.Module] = []
    for layer in model.embed.layers:
        conv = torch.nn.Conv2d(layer.W.shape[1], layer.W.shape[0], 3, stride=2, padding=1, bias=False)
        norm = torch.nn.BatchNorm2d(layer.W.shape[0])
        conv.weight.data, norm.weight.data, norm.bias.data = layer.W.data, layer.w.data, layer.b.data
        norm.running_mean, norm.running_var = layer.running_mean.clone(), layer.running_var.clone()
        layers += [conv, norm, torch.nn.GELU()]
    project = torch.nn.Conv2d(10, 16, 1)
    project.weight.data, project.bias.data = model.embed.W_E.data, model.embed.b_E.data
    reference = torch.nn.Sequential(*layers, project).double().eval()
    want_BPD = reference(pixels).flatten(2).transpose(1, 2)
    got = model.collect(pixels, ["hook_embed"])["hook_embed"]
    assert model.token_layout("hook_embed") == TokenLayout(0, 0, (4, 4), 16)
    torch.testing.assert_close(got, want_BPD, rtol=1e-12, atol=1e-12)

    save_hooked_vit(model.float(), tmp_path / "stem")
    loaded = load_hooked_vit(tmp_path / "stem")
    assert loaded.cfg.conv_stem == (6, 10)
    torch.testing.assert_close(loaded(pixels.float()), model(pixels.float()), rtol=0, atol=0)


def test_conv_stem_stride_must_equal_the_patch_size():
    with pytest.raises(ValueError, match=r"conv_stem \(8, 16\) has 2 stride-2 layers, a stride of 4; "
                                         r"patch_size is 8"):  # fmt: skip
        HookedViTConfig(d_model=16, n_layers=1, n_heads=2, d_mlp=8, image_size=(16, 16), patch_size=8,
                        conv_stem=(8, 16))  # fmt: skip


def test_to_tokens_and_from_tokens_are_inverse_at_every_hook(model, pixels):
    _, cache = model.run_with_cache(pixels)
    for name, acts in cache.items():
        tokens = model.to_tokens(name, acts)
        assert tokens.shape[-1] == model.token_layout(name).width
        torch.testing.assert_close(model.from_tokens(name, tokens, acts.shape), acts, rtol=0, atol=0)


def test_capture_keeps_gradients_and_equals_collect(model, pixels):
    names = ["blocks.0.attn.hook_pattern", "blocks.0.hook_resid_post"]
    pixels = captured_pixels(model, pixels, names, "blocks.0.hook_resid_post")
    reference = pixels.detach().clone().requires_grad_(True)
    model(reference, stop_at_layer=1).pow(2).sum().backward()
    assert pixels.grad.abs().sum() > 0
    torch.testing.assert_close(pixels.grad, reference.grad)
