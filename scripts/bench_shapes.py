"""Shapes generation speed on one core, against reading the same images back from PNG files.

Prints a markdown table of images per CPU-second of this process (the measure that a shared, busy machine
distorts least) and per wall-clock second: generating images with masks (`sample`), as image-source
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
from functools import partial

import torch

from vitsae.data import FolderSource, ImageLoader, Preprocess, ShapesDataset, export_shapes


def images_per_second(n_images: int, work: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(images per CPU-second, per wall second) of `work`, which handles `n_images`: best of `repeats`."""
    best_cpu, best_wall = float("inf"), float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return n_images / best_cpu, n_images / best_wall


def each(n_images: int, get: Callable[[int], object]) -> Callable[[], None]:
    def run() -> None:
        for i in range(n_images):
            get(i)

    return run


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
    rate = partial(images_per_second, n, repeats=repeats)
    rows = [
        ("shapes sample(): image + masks + objects, 64x64", rate(each(n, small.sample))),
        ("shapes dataset[i]: PIL image record, 64x64", rate(each(n, small.__getitem__))),
        ("shapes sample(), 128x128", rate(each(n, large.sample))),
        ("ImageLoader over shapes, preprocessed, 0 workers", rate(lambda: list(loader))),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        export_shapes(small, tmp)
        folder = FolderSource(os.path.join(tmp, "images"))
        rows.append(("baseline: decode the same PNGs (FolderSource)", rate(each(n, folder.__getitem__))))
    baseline = rows[-1][1][0]
    print(
        f"# shapes generation, {n} images, best of {repeats}; {platform.machine()}, "
        f"{os.cpu_count()} CPUs visible, 1 thread, torch {torch.__version__}\n"
    )
    print(f"load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| what | images / CPU-s | images / wall s | CPU rate vs PNG decode |")
    print("|---|---:|---:|---:|")
    for name, (per_cpu, per_wall) in rows:
        print(f"| {name} | {per_cpu:,.0f} | {per_wall:,.0f} | {per_cpu / baseline:.2f}x |")


if __name__ == "__main__":
    main()
