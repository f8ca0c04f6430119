"""Benchmark the activation store: harvest overhead over a bare forward pass, and read throughput.

Harvest: the same images, batch size and loader are run (a) through the loader alone, (b) through the
loader and `model.collect` with the results dropped (the bare forward pass), and (c) through
`vitsae.store.harvest` (token selection, dtype cast, float64 statistics, shard writes with sha256).
Each is repeated and the best time kept; the target is harvest <= 1.15x the bare pass.
Read: over the harvested store, float32 batches per second from a sequential pass, the chunk-shuffled
iterator (`ActivationStore.batches`) and a full random permutation gathered in sorted order per batch.

    .venv/bin/python scripts/bench_store.py --n-images 2048 --batch-size 64
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vitsae.data import ImageLoader, ShapesDataset
from vitsae.models import hooked_vit_from_hf, load, shipped_names
from vitsae.store import ActivationStore, HarvestConfig, harvest


def bench_model(name: str):
    """The shipped shapes ViT if present, else a transformers ViT of the same size (random weights)."""
    if name in shipped_names():
        return load(f"vitsae:{name}"), f"vitsae:{name}"
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
                    image_size=64, patch_size=8)
    return hooked_vit_from_hf(ViTModel(cfg, add_pooling_layer=False).eval()).eval(), \
        "transformers ViTModel (4 layers, width 128, patch 8, 64x64; random weights)"


def best_of(repeats: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--hooks", nargs="+",
                        default=["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--read-batch", type=int, default=4096)
    parser.add_argument("--model", default="shapes-vit", help="shipped model name to prefer")
    args = parser.parse_args()

    model, model_desc = bench_model(args.model)
    source = ShapesDataset(n_images=args.n_images, image_size=64)
    hooks = list(args.hooks)
    loader = ImageLoader(source, model.preprocess, args.batch_size, args.num_workers)
    pixels = [batch.pixels_BCHW for batch in loader]
    print(f"model: {model_desc}; hooks {hooks}; {args.n_images} shapes images, batch {args.batch_size}, "
          f"workers {args.num_workers}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")

    def loader_only() -> None:
        for _ in loader:
            pass

    def bare() -> None:
        with torch.inference_mode():
            for batch in loader:
                model.collect(batch.pixels_BCHW, hooks)

    def forward_only() -> None:
        with torch.inference_mode():
            for batch_BCHW in pixels:
                model.collect(batch_BCHW, hooks)

    work = Path(tempfile.mkdtemp(prefix="bench_store_"))

    def run_harvest() -> None:
        out = work / "harvest"
        shutil.rmtree(out, ignore_errors=True)
        harvest(HarvestConfig(model="bench", source=f"shapes:{args.n_images}", hooks=tuple(hooks), out=out,
                              batch_size=args.batch_size, num_workers=args.num_workers, progress=False),
                model=model, source=source)

    timings = {}
    for _ in range(args.repeats):  # interleaved so that load changes hit every variant alike
        for name, fn in (("loader only", loader_only), ("forward only (pixels in RAM)", forward_only),
                         ("bare: loader + collect", bare), ("harvest", run_harvest)):
            timings[name] = min(timings.get(name, float("inf")), best_of(1, fn))
    print(f"\n| step | best of {args.repeats} (s) | images/s | vs bare |")
    print("|---|---|---|---|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.3f} | {args.n_images / seconds:.0f} | "
              f"{seconds / timings['bare: loader + collect']:.3f}x |")

    store = ActivationStore.open(work / "harvest" / hooks[-1])
    row_bytes = store.d_model * np.dtype(np.float16).itemsize
    n_rows, batch = len(store), args.read_batch
    print(f"\nread: {n_rows} rows x {store.d_model} ({n_rows * row_bytes / 1e6:.1f} MB float16, "
          f"{store.manifest['counts']['shards']} shards; files in page cache), batches of {batch} as float32")

    def sequential() -> None:
        for _ in store.batches(batch, shuffle=False, epochs=1):
            pass

    def chunk_shuffled() -> None:
        for _ in store.batches(batch, seed=0, epochs=1):
            pass

    def full_permutation() -> None:
        perm = np.random.default_rng(0).permutation(n_rows)
        for start in range(0, n_rows, batch):
            store[np.sort(perm[start:start + batch])]

    print(f"\n| read | best of {args.repeats} (s) | rows/s | MB/s (stored) | vs sequential |")
    print("|---|---|---|---|---|")
    variants = (("sequential (batches, shuffle=False)", sequential),
                ("chunk-shuffled (batches, seed=0)", chunk_shuffled),
                ("full permutation, sorted gather per batch", full_permutation))
    reads = {name: best_of(args.repeats, fn) for name, fn in variants}
    for name, seconds in reads.items():
        megabytes_per_s = n_rows * row_bytes / seconds / 1e6
        print(f"| {name} | {seconds:.3f} | {n_rows / seconds:,.0f} | {megabytes_per_s:,.0f} | "
              f"{seconds / reads[variants[0][0]]:.2f}x |")
    print(f"\nmachine: {platform.machine()}, {platform.processor() or 'cpu'}; load after: "
          f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
