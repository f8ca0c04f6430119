"""Tiny random Hugging Face vision models (built offline from configs) for the models tests."""

from __future__ import annotations

import inspect

import pytest
import torch
import transformers as hf
from torch import nn

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8)


def perturb(model: nn.Module, scale: float = 0.2) -> nn.Module:
    """Move every weight off its init (norms, layer scale, biases, tokens); set eval mode."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(scale * torch.randn(param.shape, generator=generator))
    return model.eval()


# name -> (model class, config); each a family the HookedViT converters support
HF_VITS = {
    "vit": lambda: hf.ViTModel(hf.ViTConfig(**TINY, intermediate_size=64)),
    "vit_cls": lambda: hf.ViTForImageClassification(hf.ViTConfig(**TINY, intermediate_size=64, num_labels=5)),
    "clip": lambda: hf.CLIPVisionModel(hf.CLIPVisionConfig(**TINY, intermediate_size=64)),
    "clip_proj": lambda: hf.CLIPVisionModelWithProjection(
        hf.CLIPVisionConfig(**TINY, intermediate_size=64, projection_dim=24)
    ),
    "dinov2": lambda: hf.Dinov2Model(hf.Dinov2Config(**TINY, mlp_ratio=2)),
    "dinov2_cls": lambda: hf.Dinov2ForImageClassification(hf.Dinov2Config(**TINY, mlp_ratio=2, num_labels=5)),
    "dinov2_swiglu": lambda: hf.Dinov2Model(hf.Dinov2Config(**TINY, mlp_ratio=2, use_swiglu_ffn=True)),
    "dinov2_reg": lambda: hf.Dinov2WithRegistersModel(
        hf.Dinov2WithRegistersConfig(**TINY, mlp_ratio=2, num_register_tokens=3)
    ),
    "dinov2_reg_cls": lambda: hf.Dinov2WithRegistersForImageClassification(
        hf.Dinov2WithRegistersConfig(**TINY, mlp_ratio=2, num_register_tokens=3, num_labels=5)
    ),
    "siglip": lambda: hf.SiglipVisionModel(hf.SiglipVisionConfig(**TINY, intermediate_size=64)),
}


def reference_output(ref: nn.Module, pixels: torch.Tensor, interpolate: bool = False):
    """(model output tensor, hidden_states) of a Hugging Face reference."""
    kwargs = {"output_hidden_states": True}
    if "interpolate_pos_encoding" in inspect.signature(ref.forward).parameters:
        kwargs["interpolate_pos_encoding"] = interpolate
    out = ref(pixels, **kwargs)
    for field in ("logits", "image_embeds", "pooler_output"):
        value = getattr(out, field, None)
        if value is not None:
            return value, out.hidden_states
    return out.last_hidden_state, out.hidden_states


@pytest.fixture
def hf_reference():
    """The function giving a reference's (output, hidden_states)."""
    return reference_output


@pytest.fixture(params=sorted(HF_VITS))
def hf_vit(request) -> tuple[str, nn.Module]:
    torch.manual_seed(0)
    return request.param, perturb(HF_VITS[request.param]())


@pytest.fixture
def hf_vit_models() -> dict[str, nn.Module]:
    """Lazily built, perturbed references by name."""

    class _Lazy(dict):
        def __missing__(self, name: str) -> nn.Module:
            torch.manual_seed(0)
            self[name] = perturb(HF_VITS[name]())
            return self[name]

    return _Lazy()


def captured_pixels(model, pixels: torch.Tensor, names: list[str], loss_hook: str) -> torch.Tensor:
    """A copy of `pixels` holding the gradient of the squared sum of `loss_hook`'s captured tokens, once
    `model.capture` (which keeps gradients) is checked to return what `model.collect` does at `names`."""
    pixels = pixels.clone().requires_grad_(True)
    got = model.capture(pixels, names)
    for name, tokens in model.collect(pixels, names).items():
        torch.testing.assert_close(got[name], tokens, rtol=0, atol=0)
    got[loss_hook].pow(2).sum().backward()
    return pixels
