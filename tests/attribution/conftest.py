"""Shared pieces of the attribution tests."""

from __future__ import annotations

from vitsae.models import HookedViT, HookedViTConfig


def small_vit() -> HookedViT:
    """A 2-block ViT on 16x16 images (4x4 patches of 4 pixels, a CLS token), width 16, a 3-class head,
    weights from `init_weights(std=0.3)`: small enough to take gradients of every pixel quickly."""
    cfg = HookedViTConfig(
        d_model=16, n_layers=2, n_heads=2, d_mlp=32, image_size=(16, 16), patch_size=4, head_out=3
    )
    model = HookedViT(cfg)
    model.init_weights(std=0.3)
    return model.eval()
