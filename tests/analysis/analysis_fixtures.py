"""A tiny random ViT, shapes images and an SAE, and a real small store harvested with them (tests only)."""

from __future__ import annotations

from pathlib import Path

import torch

from vitsae.data.preprocess import Preprocess
from vitsae.data.shapes import ShapesDataset
from vitsae.models import HookedViT, HookedViTConfig
from vitsae.sae.config import SAEConfig
from vitsae.sae.model import SparseAutoencoder
from vitsae.store import ActivationStore, HarvestConfig, harvest

HOOK = "blocks.1.hook_resid_post"
N_IMAGES = 14


def tiny_vit() -> HookedViT:
    """2 blocks on 32x32 images, 4x4 patches of 8 pixels, a 5-class head, seeded random weights."""
    cfg = HookedViTConfig(
        d_model=32, n_layers=2, n_heads=4, d_mlp=64, image_size=(32, 32), patch_size=8, head_out=5
    )
    model = HookedViT(cfg, Preprocess(size=(32, 32)))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return model.eval()


def shapes(n_images: int = N_IMAGES) -> ShapesDataset:
    return ShapesDataset(n_images=n_images, image_size=32)


def tiny_sae(architecture: str = "topk") -> SparseAutoencoder:
    generator = torch.Generator().manual_seed(1)
    cfg = SAEConfig(d_in=32, expansion_factor=3, architecture=architecture, k=5, hook_name=HOOK)
    sae = SparseAutoencoder(cfg, generator=generator)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(sae.b_enc.shape, generator=generator) * 0.5)
    return sae.eval()


def harvest_small_store(out: Path, n_images: int = N_IMAGES) -> ActivationStore:
    """14 (or `n_images`) images x 17 tokens ([CLS] + 4x4 patches) in float32 over several shards."""
    config = HarvestConfig(
        model="tests:tiny_vit",
        source=f"shapes:{n_images}",
        hooks=(HOOK,),
        out=out,
        dtype="float32",
        batch_size=4,
        shard_rows=68,
        progress=False,
    )
    directories = harvest(config, model=tiny_vit(), source=shapes(n_images))
    return ActivationStore.open(Path(directories[HOOK]))
