"""What many tests build: a tiny seeded ViT, shapes images, a tiny SAE, a real small store harvested with
them, a small training config, and the headless Chromium settings of the browser tests.

Every builder is deterministic (seeded), so a subprocess or another rank that calls it gets the same model
as the test; `module:tests.helpers:tiny_vit` names the ViT as a model spec.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from vitsae.data.preprocess import Preprocess
from vitsae.data.shapes import ShapesDataset
from vitsae.models import HookedModule, HookedViT, HookedViTConfig
from vitsae.sae.config import SAEConfig
from vitsae.sae.model import SparseAutoencoder
from vitsae.store import ActivationStore, HarvestConfig, harvest
from vitsae.train import TrainConfig

HOOK = "blocks.1.hook_resid_post"  # the hook of the small store and of the tiny SAE
N_IMAGES = 14  # images in the small store


def tiny_vit(seed: int = 0, n_layers: int = 3, n_registers: int = 0, head_out: int = 5) -> HookedViT:
    """A ViT on 32x32 images (a CLS token and 4x4 patches of 8 pixels), width 32, a `head_out`-class head,
    random weights drawn from `seed`. With 3 blocks, `collect` at blocks 0 and 1 stops before the last."""
    cfg = HookedViTConfig(
        d_model=32,
        n_layers=n_layers,
        n_heads=4,
        d_mlp=64,
        image_size=(32, 32),
        patch_size=8,
        n_registers=n_registers,
        head_out=head_out,
    )
    model = HookedViT(cfg, Preprocess(size=(32, 32)))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return model.eval()


def shapes(n_images: int = N_IMAGES) -> ShapesDataset:
    """Shapes images at the tiny ViT's 32x32."""
    return ShapesDataset(n_images=n_images, image_size=32)


def tiny_sae(architecture: str = "topk") -> SparseAutoencoder:
    """A seeded 96-feature SAE (k=5) on the tiny ViT's width, trained on nothing but with firing biases."""
    generator = torch.Generator().manual_seed(1)
    cfg = SAEConfig(d_in=32, expansion_factor=3, architecture=architecture, k=5, hook_name=HOOK)
    sae = SparseAutoencoder(cfg, generator=generator)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(sae.b_enc.shape, generator=generator) * 0.5)
    return sae.eval()


class SmallCNN(nn.Module):
    """Two stride-2 convolutions (3 -> 8 -> 12 channels) and a 5-class head on the mean-pooled map."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 12, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(12, 5)

    def forward(self, pixels_BCHW: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(pixels_BCHW).mean((2, 3)))


def small_cnn(seed: int = 0) -> HookedModule:
    """`SmallCNN` (seeded) wrapped with hook points; its last map `body.2` is 12 channels on 32x32 input."""
    torch.manual_seed(seed)
    return HookedModule(SmallCNN().eval(), Preprocess(size=(32, 32)))


def random_sae(
    d_in: int, hook: str, architecture: str = "topk", k: int = 4, seed: int = 0
) -> SparseAutoencoder:
    """An untrained SAE (F = 4 * d_in, norm_scale 0.7) whose random encoder makes every feature fire
    somewhere and whose biases are off zero, so splices, edits and their errors are all non-trivial."""
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


def harvest_small_store(out: Path, n_images: int = N_IMAGES) -> ActivationStore:
    """14 (or `n_images`) images x 17 tokens ([CLS] + 4x4 patches) of the tiny ViT at HOOK, in float32 over
    several shards."""
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


def tiny_train_config(**overrides: object) -> TrainConfig:
    """A training run of a dozen steps of 16 rows (checkpoints every 5 steps, no progress bar or plot);
    `overrides` replace any field."""
    values: dict[str, object] = dict(
        expansion_factor=(2,),
        batch_size=16,
        total_tokens=16 * 12,
        log_every=3,
        checkpoint_every=5,
        progress=False,
        plot=False,
        lr_warmup_steps=1,
    )
    return TrainConfig(**{**values, **overrides})


# Few firings and (with a strong l1_coefficient) a strong penalty, so features die and get revived.
DYING_FEATURES: dict[str, object] = dict(
    expansion_factor=(2,), k=(1,), lr=(3e-3, 1e-3), batch_size=64, dead_tokens=64, resample_until=1.0
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@contextlib.contextmanager
def launched_chromium() -> Iterator[Any]:
    """Debian's headless Chromium under Playwright (closed on exit); skips the test where it is absent."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"no Chromium at {CHROMIUM}; run scripts/browser.sh to install Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def recording_problems(page: Any) -> Any:
    """`page`, with its console errors and warnings and its page errors collected in `page.problems`."""
    page.problems = []
    page.on(
        "console",
        lambda m: page.problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None,
    )
    page.on("pageerror", lambda e: page.problems.append(f"pageerror: {e}"))
    return page


# A label that would run script in a page that inserted it as HTML.
HOSTILE_LABEL = '<img src=x onerror="window.__pwned=1">stripes & "dots"</script>'
