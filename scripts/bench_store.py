"""Benchmark the activation store: harvest overhead over a bare forward pass, and read throughput.

Harvest: the same images, batch size and loader are run (a) through the loader alone, (b) through the
loader and `model.collect` with the results dropped (the bare forward pass), and (c) through
`vitsae.store.harvest` (token selection, dtype cast, float64 statistics, shard writes with sha256).
Each is repeated (interleaved) and the best wall and the best CPU time (this process and its threads;
robust on a shared machine) kept; the target is harvest <= 1.15x the bare pass.
Read: float32 batches per second from a sequential pass, the chunk-shuffled iterator
(`ActivationStore.batches`) and a full random permutation gathered in sorted order per batch, over the
ViT's store and over a wide store (width 768, 256 tokens per image) harvested from a one-layer patch
convolution (a real HookedModule; its forward is cheap, so that harvest is bound by writing).

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

from vitsae.data import ImageLoader, Preprocess, ShapesDataset
from vitsae.models import HookedModule, hooked_vit_from_hf, load, shipped_names
from vitsae.store import ActivationStore, HarvestConfig, harvest


def bench_model(name: str):
    """The shipped shapes ViT if present, else a transformers ViT of the same size (random weights)."""
    if name in shipped_names():
        return load(f"vitsae:{name}"), f"vitsae:{name}"
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    cfg = ViTConfig(
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=512,
        image_size=64,
        patch_size=8,
    )
    return hooked_vit_from_hf(
        ViTModel(cfg, add_pooling_layer=False).eval()
    ).eval(), "transformers ViTModel (4 layers, width 128, patch 8, 64x64; random weights)"


def timed(run: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def best_of(repeats: int, run: Callable[[], object]) -> float:
    return min(timed(run)[0] for _ in range(repeats))


def read_benchmark(store: ActivationStore, read_batch: int, repeats: int) -> None:
    """Rows/s and MB/s of sequential, chunk-shuffled and fully permuted reads of one store."""
    row_bytes = store.d_model * np.dtype(np.float16).itemsize
    n_rows, batch = len(store), read_batch
    print(
        f"\nread: {n_rows} rows x {store.d_model} ({n_rows * row_bytes / 1e6:.1f} MB float16, "
        f"{store.manifest['counts']['shards']} shards; files in page cache), batches of {batch} as float32"
    )

    def sequential() -> None:
        for _ in store.batches(batch, shuffle=False, epochs=1):
            pass

    def chunk_shuffled() -> None:
        for _ in store.batches(batch, seed=0, epochs=1):
            pass

    def full_permutation() -> None:
        perm = np.random.default_rng(0).permutation(n_rows)
        for start in range(0, n_rows, batch):
            store[np.sort(perm[start : start + batch])]

    print(f"\n| read | best of {repeats} (s) | rows/s | MB/s (stored) | vs sequential |")
    print("|---|---|---|---|---|")
    variants = (
        ("sequential (batches, shuffle=False)", sequential),
        ("chunk-shuffled (batches, seed=0)", chunk_shuffled),
        ("full permutation, sorted gather per batch", full_permutation),
    )
    reads = {name: best_of(repeats, fn) for name, fn in variants}
    for name, seconds in reads.items():
        megabytes_per_s = n_rows * row_bytes / seconds / 1e6
        print(
            f"| {name} | {seconds:.3f} | {n_rows / seconds:,.0f} | {megabytes_per_s:,.0f} | "
            f"{seconds / reads[variants[0][0]]:.2f}x |"
        )


def harvest_wide(
    out: Path, n_images: int, batch_size: int, num_workers: int
) -> tuple[ActivationStore, float]:
    """A 768-wide store: 16x16 patches of 256x256 shapes images through one patch convolution."""
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 768, 16, stride=16), torch.nn.GELU()).eval()
    model = HookedModule(conv, Preprocess(size=(256, 256)), config={"bench": "patch-conv-768"})
    start = time.perf_counter()
    harvest(
        HarvestConfig(
            model="bench:patch-conv-768",
            source=f"shapes:{n_images}",
            hooks=("1",),
            out=out,
            batch_size=batch_size,
            num_workers=num_workers,
            progress=False,
        ),
        model=model,
        source=ShapesDataset(n_images=n_images, image_size=64),
    )
    return ActivationStore.open(out / "1"), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument(
        "--hooks", nargs="+", default=["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]
    )
    parser.add_argument("--shard-rows", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--read-batch", type=int, default=4096)
    parser.add_argument("--model", default="shapes-vit", help="shipped model name to prefer")
    parser.add_argument(
        "--wide-images", type=int, default=2048, help="images in the wide read store (0: skip it)"
    )
    args = parser.parse_args()

    model, model_desc = bench_model(args.model)
    source = ShapesDataset(n_images=args.n_images, image_size=64)
    hooks = list(args.hooks)
    loader = ImageLoader(source, model.preprocess, args.batch_size, args.num_workers)
    pixels = [batch.pixels_BCHW for batch in loader]
    print(
        f"model: {model_desc}; hooks {hooks}; {args.n_images} shapes images, batch {args.batch_size}, "
        f"workers {args.num_workers}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
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
        harvest(
            HarvestConfig(
                model="bench",
                source=f"shapes:{args.n_images}",
                hooks=tuple(hooks),
                out=out,
                batch_size=args.batch_size,
                shard_rows=args.shard_rows,
                num_workers=args.num_workers,
                progress=False,
            ),
            model=model,
            source=source,
        )

    walls: dict[str, float] = {}
    cpus: dict[str, float] = {}
    for _ in range(args.repeats):  # interleaved so that load changes hit every variant alike
        for name, fn in (
            ("loader only", loader_only),
            ("forward only (pixels in RAM)", forward_only),
            ("bare: loader + collect", bare),
            ("harvest", run_harvest),
        ):
            wall, cpu = timed(fn)
            walls[name], cpus[name] = min(walls.get(name, wall), wall), min(cpus.get(name, cpu), cpu)
    base = "bare: loader + collect"
    print(f"\n| step | wall s (best of {args.repeats}) | images/s | wall vs bare | CPU s | CPU vs bare |")
    print("|---|---|---|---|---|---|")
    for name in walls:
        print(
            f"| {name} | {walls[name]:.3f} | {args.n_images / walls[name]:.0f} | "
            f"{walls[name] / walls[base]:.3f}x | {cpus[name]:.3f} | {cpus[name] / cpus[base]:.3f}x |"
        )

    read_benchmark(ActivationStore.open(work / "harvest" / hooks[-1]), args.read_batch, args.repeats)
    if args.wide_images:
        wide, seconds = harvest_wide(work / "wide", args.wide_images, args.batch_size, args.num_workers)
        megabytes = wide.manifest["counts"]["rows"] * wide.d_model * 2 / 1e6
        print(
            f"\nwide store: harvested {args.wide_images} images ({megabytes:.0f} MB) in {seconds:.1f} s "
            f"({args.wide_images / seconds:.0f} images/s, {megabytes / seconds:.0f} MB/s written)"
        )
        read_benchmark(wide, args.read_batch, args.repeats)
    print(
        f"\nmachine: {platform.machine()}, {platform.processor() or 'cpu'}; load after: "
        f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}"
    )
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
