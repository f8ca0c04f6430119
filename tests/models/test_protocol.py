"""Both hooked model classes keep the HookedModel contract, and share one hook-name implementation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vitsae.data.preprocess import Preprocess
from vitsae.models import HookedModule, HookedViT, HookedViTConfig
from vitsae.models.protocol import HookedModel, SharedHookMethods


def tiny_models() -> list[HookedModel]:
    vit = HookedViT(
        HookedViTConfig(d_model=8, n_layers=1, n_heads=2, d_mlp=16, image_size=(8, 8), patch_size=4),
        Preprocess(size=(8, 8)),
    )
    cnn = HookedModule(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), Preprocess(size=(8, 8)))
    return [vit, cnn]


@pytest.mark.parametrize("model", tiny_models(), ids=["HookedViT", "HookedModule"])
def test_both_classes_keep_the_contract(model):
    assert isinstance(model, HookedModel) and isinstance(model, SharedHookMethods)
    names = model.hook_names()
    assert names == list(model.hook_dict) and names[-1] == (
        "hook_pooled" if isinstance(model, HookedViT) else "hook_logits"
    )
    model.check_hook_names(names)
    with pytest.raises(ValueError, match="Valid hook names"):
        model.check_hook_names(["no.such.hook"])


def test_an_object_without_capture_is_not_a_hooked_model():
    class Partial(SharedHookMethods):
        hook_dict: dict = {}
        preprocess = Preprocess(size=(8, 8))

    assert not isinstance(Partial(), HookedModel)


@pytest.mark.parametrize("model", tiny_models(), ids=["HookedViT", "HookedModule"])
def test_collect_is_capture_without_the_graph(model):
    pixels = torch.randn(2, 3, 8, 8, requires_grad=True)
    name = model.hook_names()[0]
    captured, collected = model.capture(pixels, [name])[name], model.collect(pixels, [name])[name]
    assert captured.requires_grad and not collected.requires_grad
    torch.testing.assert_close(collected, captured.detach(), rtol=0, atol=0)
