"""Tiny hooked models (a ViT with CLS and registers, a small CNN) and random SAEs, for the edit and
eval tests."""

from __future__ import annotations

import torch
from torch import nn

from vitsae.data.preprocess import Preprocess
from vitsae.models import HookedModule
from vitsae.models.config import HookedViTConfig
from vitsae.models.vit import HookedViT
from vitsae.sae.config import SAEConfig
from vitsae.sae.model import SparseAutoencoder

VIT_HOOKS = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")
CNN_HOOK = "body.2"


def make_vit() -> HookedViT:
    torch.manual_seed(0)
    cfg = HookedViTConfig(
        d_model=16,
        n_layers=2,
        n_heads=2,
        d_mlp=32,
        image_size=(16, 16),
        patch_size=4,
        n_registers=2,
        head_out=5,
    )
    model = HookedViT(cfg, Preprocess(size=(16, 16)))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.3 * torch.randn_like(param))
    return model.eval()


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 12, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


def make_cnn() -> HookedModule:
    torch.manual_seed(0)
    return HookedModule(SmallCNN().eval(), Preprocess(size=(16, 16)))


def make_sae(
    d_in: int, hook: str, architecture: str = "topk", k: int = 4, seed: int = 0
) -> SparseAutoencoder:
    generator = torch.Generator().manual_seed(seed)
    cfg = SAEConfig(
        d_in=d_in, expansion_factor=4, architecture=architecture, k=k, hook_name=hook, norm_scale=0.7
    )
    sae = SparseAutoencoder(cfg, generator=generator)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(sae.W_enc.shape, generator=generator))
        sae.b_enc.copy_(0.1 * torch.randn(sae.b_enc.shape, generator=generator))
        sae.b_dec.copy_(0.1 * torch.randn(sae.b_dec.shape, generator=generator))
    return sae.eval()
