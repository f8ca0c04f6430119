"""Channels-last maps and classification heads read from the model (issue 11): ConvNeXt's block-internal
layers are (B, H, W, C), ResNet's maps (B, C, H, W); ResNet's classifier is a head, a head-less
CLIPVisionModel has no `hook_logits`."""

from __future__ import annotations

import pytest
import torch
import transformers as hf
from torch import nn

from tests.models.conftest import HF_VITS, perturb
from vitsae.analysis.logits import unembedding
from vitsae.data.preprocess import Preprocess
from vitsae.models import HookedModule, hooked_vit_from_hf


def convnext() -> nn.Module:
    torch.manual_seed(0)
    config = hf.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=5, image_size=32)
    return perturb(hf.ConvNextForImageClassification(config))


def resnet() -> nn.Module:
    torch.manual_seed(0)
    config = hf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 12, 16], depths=[1, 1, 1], num_labels=5)
    return perturb(hf.ResNetForImageClassification(config))


@pytest.mark.parametrize("size", [(32, 32), (32, 64)])
def test_convnext_block_layers_are_read_channels_last(size) -> None:
    model = convnext()
    wrapped = HookedModule(model, Preprocess(size=size))
    pixels = torch.randn(2, 3, *size)
    h, w = size[0] // 8, size[1] // 8  # stage 1 is at stride 8
    hooks = {
        "convnext.encoder.stages.1.layers.0.pwconv1": 64,  # 4 x 16
        "convnext.encoder.stages.1.layers.0.act": 64,
        "convnext.encoder.stages.1.layers.0.layernorm": 16,
        "convnext.encoder.stages.1.layers.0.pwconv2": 16,
    }
    with torch.no_grad():
        _, cache = wrapped.run_with_cache(pixels, names_filter=list(hooks))
    got = wrapped.collect(pixels, list(hooks))
    for hook, width in hooks.items():
        # before: read as (C, H, W), pwconv1 became h*64 tokens of width w instead of h*w tokens of width 64
        layout = wrapped.token_layout(hook)
        assert (layout.grid_hw, layout.width) == ((h, w), width), hook
        assert cache[hook].shape == (2, h, w, width)
        torch.testing.assert_close(got[hook], cache[hook].reshape(2, h * w, width))
        back = wrapped.from_tokens(hook, got[hook], cache[hook].shape)
        torch.testing.assert_close(back, cache[hook])
    # the stage outputs stay channels-first
    stage = "convnext.encoder.stages.1"
    assert wrapped.token_layout(stage).grid_hw == (h, w) and wrapped.token_layout(stage).width == 16


def test_resnet_maps_stay_channels_first_and_its_classifier_is_a_head() -> None:
    model = resnet()
    wrapped = HookedModule(model, Preprocess(size=(32, 32)))
    for i, (width, side) in enumerate([(8, 8), (12, 4), (16, 2)]):
        layout = wrapped.token_layout(f"resnet.encoder.stages.{i}")
        assert (layout.grid_hw, layout.width) == ((side, side), width)
    # before: `vitsae browse` said "no classification head" for ResNetForImageClassification
    W_U = unembedding(wrapped)
    torch.testing.assert_close(W_U, model.classifier[1].weight.detach().T)
    pooled = torch.randn(3, 16)
    torch.testing.assert_close(
        pooled @ W_U + model.classifier[1].bias, model.classifier(pooled[..., None, None])
    )


def test_convnext_head_folds_its_final_layernorm_and_headless_models_have_none() -> None:
    model = convnext()
    wrapped = HookedModule(model, Preprocess(size=(32, 32)))
    expected = model.convnext.layernorm.weight.detach()[:, None] * model.classifier.weight.detach().T
    torch.testing.assert_close(unembedding(wrapped), expected)
    headless = HookedModule(resnet().resnet, Preprocess(size=(32, 32)))
    with pytest.raises(ValueError, match="no classification head"):
        unembedding(headless)
    mlp_head = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 8), nn.ReLU(), nn.Linear(8, 2)
    )
    assert HookedModule(mlp_head, Preprocess(size=(32, 32))).W_U is None


def test_an_ambiguous_map_is_refused_naming_the_hook_and_can_be_declared() -> None:
    class Grid(nn.Module):
        """Gives a (B, 4, 4, 4) map whatever the image size: nothing tells its channel axis."""

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return pixels[:, :1, :4, :4].mean() + torch.zeros(pixels.shape[0], 4, 4, 4)

    model = nn.Sequential()
    model.add_module("grid", Grid())
    wrapped = HookedModule(model, Preprocess(size=(16, 16)))
    with pytest.raises(
        ValueError, match=r"hook 'grid' outputs a \(1, 4, 4, 4\) map .*layouts=\{'grid': 'BHWC'\}"
    ):
        wrapped.token_layout("grid")
    declared = HookedModule(model, Preprocess(size=(16, 16)), layouts={"grid": "BHWC"})
    assert declared.token_layout("grid").grid_hw == (4, 4)
    with pytest.raises(ValueError, match="must be one of BCHW, BHWC"):
        HookedModule(model, Preprocess(size=(16, 16)), layouts={"grid": "HWC"})


def test_a_headless_clip_vision_model_has_no_logits_hook() -> None:
    headless = hooked_vit_from_hf(HF_VITS["clip"]().eval(), Preprocess(size=(32, 32)))
    assert "hook_logits" not in headless.hook_names() and headless.hook_names()[-1] == "hook_pooled"
    projected = hooked_vit_from_hf(HF_VITS["clip_proj"]().eval(), Preprocess(size=(32, 32)))
    assert projected.hook_names()[-1] == "hook_logits"


def test_the_head_is_read_only_through_the_hooks_it_is_linear_in() -> None:
    """ResNet's last stage feeds the pooler unchanged; an earlier map, or one a functional mean follows
    (SmallCNN), gets no logit effects through W_U."""
    from tests.helpers import small_cnn

    wrapped = HookedModule(resnet(), Preprocess(size=(32, 32)))
    assert "resnet.encoder.stages.2" in wrapped.head_input_hooks
    unembedding(wrapped, "resnet.encoder.stages.2")
    with pytest.raises(ValueError, match="the head is not linear in hook 'resnet.encoder.stages.1'"):
        unembedding(wrapped, "resnet.encoder.stages.1")
    cnn = small_cnn()
    assert cnn.W_U is not None and cnn.head_input_hooks == frozenset()
    with pytest.raises(ValueError, match="the head is not linear in hook 'body.3'"):
        unembedding(cnn, "body.3")
