"""Shapes generation speed on one core, against reading the same images back from PNG files.

Prints a markdown table of images per second: generating images with masks (`sample`), as image-source
records (`dataset[i]`, a PIL image), at 128x128, through the batched loader with preprocessing, and the
baseline of decoding the same 64x64 images from an exported PNG folder (`FolderSource`).

    .venv/bin/python scripts/bench_shapes.py --n-images 2000
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable

import torch

from vitsae.data import FolderSource, ImageLoader, Preprocess, ShapesDataset, export_shapes


def images_per_second(n_images: int, work: Callable[[int], object], repeats: int) -> float:
    """Best of `repeats` timed passes over `n_images` (on a shared machine the best pass is the cleanest)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(n_images):
            work(i)
        best = min(best, time.perf_counter() - started)
    return n_images / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    n, repeats = args.n_images, args.repeats
    small = ShapesDataset(seed=0, n_images=n)
    large = ShapesDataset(seed=0, n_images=n, image_size=128)
    loader = ImageLoader(small, Preprocess(size=(64, 64)), batch_size=256)
    rows = [
        ("shapes sample(): image + masks + objects, 64x64", images_per_second(n, small.sample, repeats)),
        ("shapes dataset[i]: PIL image record, 64x64", images_per_second(n, small.__getitem__, repeats)),
        ("shapes sample(), 128x128", images_per_second(n, large.sample, repeats)),
        ("ImageLoader over shapes, preprocessed, 0 workers", n / _loader_seconds(loader, repeats)),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        export_shapes(small, tmp)
        folder = FolderSource(os.path.join(tmp, "images"))
        rows.append(("baseline: decode the same PNGs (FolderSource)", images_per_second(n, folder.__getitem__,
                                                                                      repeats)))
    baseline = rows[-1][1]
    print(f"# shapes generation, {n} images, best of {repeats}; {platform.machine()}, "
          f"{os.cpu_count()} CPUs visible, 1 thread, torch {torch.__version__}\n")
    print("| what | images/s | vs PNG decode |")
    print("|---|---:|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / baseline:.2f}x |")


def _loader_seconds(loader: ImageLoader, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _batch in loader:
            pass
        best = min(best, time.perf_counter() - started)
    return best


if __name__ == "__main__":
    main()
