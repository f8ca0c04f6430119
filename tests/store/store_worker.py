"""The harvest settings of the store tests, and a script that harvests with the tiny ViT of tests/helpers.py.

Run as a script (plain, under torchrun, or to be killed mid-way; with the repository on PYTHONPATH) it builds
the same model in every process, so subprocess harvests are comparable byte for byte with in-process ones.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from tests.helpers import shapes, tiny_vit
from vitsae.data.loader import ImageLoader
from vitsae.data.sources import ImageSource
from vitsae.models import HookedViT
from vitsae.store import HarvestConfig, harvest

HOOKS = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")
N_IMAGES = 24  # images in the shared harvested store of the fixtures


class SlowModel:
    """Delegates to a model but sleeps after each forward, so a test can interrupt a harvest mid-way."""

    def __init__(self, model: HookedViT, delay_s: float) -> None:
        self.model, self.delay_s = model, delay_s

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def to(self, device: str) -> SlowModel:
        self.model.to(device)
        return self

    def eval(self) -> SlowModel:
        self.model.eval()
        return self

    def collect(self, pixels_BCHW: torch.Tensor, hook_names: list[str]) -> dict[str, torch.Tensor]:
        out = self.model.collect(pixels_BCHW, hook_names)
        time.sleep(self.delay_s)
        return out


def reference_rows(
    model: HookedViT, source: ImageSource, hook: str, tokens_T: list[int], dtype: torch.dtype
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """run_with_cache over the same batches, kept tokens flattened image by image, cast to `dtype`."""
    acts, images, tokens = [], [], []
    for batch in ImageLoader(source, model.preprocess, batch_size=4):
        _, cache = model.run_with_cache(batch.pixels_BCHW, names_filter=[hook])
        kept_BTD = cache[hook][:, tokens_T]
        acts.append(kept_BTD.reshape(-1, kept_BTD.shape[-1]).to(dtype).float())
        images.append(batch.indices_B.repeat_interleave(len(tokens_T)))
        tokens.append(torch.tensor(tokens_T).repeat(len(batch.indices_B)))
    return torch.cat(acts), torch.cat(images).numpy(), torch.cat(tokens).numpy()


def config(out: Path, n_images: int, **overrides: object) -> HarvestConfig:
    values = {
        "model": "tests:tiny_vit",
        "source": f"shapes:{n_images}",
        "hooks": HOOKS,
        "out": out,
        "batch_size": 4,
        "shard_rows": 68,
        "progress": False,
        **overrides,
    }
    return HarvestConfig(**values)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: float sums then round the same way in every process, so stores written
    by subprocesses, ranks and this process can be compared byte for byte."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n-images", type=int, default=24)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--seed-from-rank", action="store_true", help="each rank builds different weights")
    args = parser.parse_args()
    model = tiny_vit(int(os.environ.get("RANK", "0")) if args.seed_from_rank else 0)
    harvest(
        config(args.out, args.n_images),
        model=SlowModel(model, args.delay) if args.delay else model,
        source=shapes(args.n_images),
    )


if __name__ == "__main__":
    main()
