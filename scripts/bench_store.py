"""Benchmark the activation store: harvest overhead over a bare forward pass, and read throughput.

Harvest: the same images, batch size and loader are run (a) through the loader alone, (b) through the
loader and `model.collect` with the results dropped (the bare forward pass), and (c) through
`vitsae.store.harvest` (token selection, dtype cast, float64 statistics, shard writes with sha256).
Each is repeated (interleaved) and the best wall and the best CPU time (this process and its threads;
robust on a shared machine) kept; the target is harvest <= 1.15x the bare pass.
Feed (`--part feed`): one epoch of training batches over the same ~1 GB store (768-wide float16, 256
rows per image), each run from a cold page cache (dropped as root between runs; the script says whether
the machine allowed it): a plain sequential read of the shard files (the disk's floor), the shuffled
reader as it was on main (reproduced here), and the new feed (stored dtype as for a GPU, float32 as for a
CPU, with and without the first-read sha256 check, and held in RAM), plus `vitsae verify`'s full check;
rows/s, MB/s and the ratio to the floor, and how often neighbouring rows of one image share a batch.

    .venv/bin/python scripts/bench_store.py --n-images 2048 --batch-size 64
    .venv/bin/python scripts/bench_store.py --part feed --feed-gb 1 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchtools import timed

from vitsae.data import ImageLoader, Preprocess, ShapesDataset
from vitsae.models import HookedModule, hooked_vit_from_hf, load, shipped_names
from vitsae.store import ActivationStore, HarvestConfig, harvest
from vitsae.store.shuffle import BatchOrder, chunk_spans, same_batch_share
from vitsae.store.verify import store_problems


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


def drop_page_cache() -> bool:
    """Write back and drop the page cache (root only); False where the machine refuses."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def cached_mib() -> float:
    """The page cache's size (/proc/meminfo `Cached`) in MiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Cached:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def harvest_feed_store(out: Path, gigabytes: float, batch_size: int) -> tuple[ActivationStore, float]:
    """A 768-wide float16 store of about `gigabytes` GB: 16x16 patch tokens (256 rows per image) of 64x64
    shapes images through one 4x4 patch convolution, 16,384-row shards (harvest's default shard size is
    65,536 rows; smaller shards make the lazy sha256 check's granularity visible)."""
    n_images = max(1, int(gigabytes * 1e9 / (256 * 768 * 2)))
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 768, 4, stride=4), torch.nn.GELU()).eval()
    model = HookedModule(conv, Preprocess(size=(64, 64)), config={"bench": "patch-conv-768"})
    start = time.perf_counter()
    harvest(
        HarvestConfig(
            model="bench:patch-conv-768",
            source=f"shapes:{n_images}",
            hooks=("1",),
            out=out,
            batch_size=batch_size,
            shard_rows=16384,
            progress=False,
        ),
        model=model,
        source=ShapesDataset(n_images=n_images, image_size=64),
    )
    return ActivationStore.open(out / "1", verify="size"), time.perf_counter() - start


def sequential_floor(store: ActivationStore) -> None:
    """Every shard file read front to back in 16 MiB reads: what the disk gives at best."""
    buffer = bytearray(16 << 20)
    for entry in store.manifest["shards"]:
        with open(store.path / entry["file"], "rb", buffering=0) as fh:
            while fh.readinto(buffer):
                pass


def main_reader_batches(store: ActivationStore, batch: int, chunk_rows: int = 2048, buffer_rows: int = 65536):
    """The shuffled reader as it was on main (7999389), reproduced as the baseline: memory-mapped chunk
    reads concatenated into a 64k-row buffer, the buffer permuted (a second copy), float32 batches cut
    from it in a prefetch thread (here inline: the consumer does nothing, so the thread would only add a
    hand-over). Same order as the new feed with the same chunk and window sizes."""
    order = BatchOrder(
        chunk_spans([e["rows"] for e in store.manifest["shards"]], chunk_rows),
        0,
        True,
        buffer_rows // chunk_rows,
    )
    for w, spans in enumerate(order.windows(0)):
        buffer_RD = np.concatenate([store.read_span(lo, hi) for lo, hi in spans])
        buffer_RD = buffer_RD[order.within_window(0, w, len(buffer_RD))]
        for pos in range(0, len(buffer_RD), batch):
            store.to_float(buffer_RD[pos : pos + batch])


def feed_benchmark(args: argparse.Namespace, work: Path) -> None:
    """One cold epoch of each reading path over the same store, page cache dropped before each."""
    store, seconds = harvest_feed_store(work / "feed", args.feed_gb, args.batch_size)
    path, n_rows, row_bytes = store.path, len(store), store.row_bytes
    nbytes = n_rows * row_bytes
    chunk_rows = (args.read_chunk_mib << 20) // row_bytes
    window_rows = (args.shuffle_window_mib << 20) // row_bytes
    before = cached_mib()
    dropped = drop_page_cache()
    print(
        f"\nfeed store: {n_rows:,} rows x {store.d_model} float16 = {nbytes / 1e9:.2f} GB in "
        f"{store.manifest['counts']['shards']} shards (harvested in {seconds:.0f} s); batches of "
        f"{args.read_batch}; page cache dropped before each run: {dropped} (Cached {before:,.0f} MiB -> "
        f"{cached_mib():,.0f} MiB after a drop); free memory {available_gib():.1f} GiB"
    )

    def feed(verify: str, keep_dtype: bool, hold: bool = False, store: ActivationStore | None = None):
        """One epoch of the new feed; on `store` (already used: its window buffers are reused) epoch 1."""

        def run() -> None:
            opened = store or ActivationStore.open(path, verify=verify)
            held = opened.hold() if hold else None
            epoch = 0 if store is None else 1
            for _ in opened.batches(
                args.read_batch,
                start=(epoch, 0),
                epochs=epoch + 1,
                chunk_rows=chunk_rows,
                window_rows=window_rows,
                keep_dtype=keep_dtype,
                held=held,
            ):
                pass

        return run

    used = ActivationStore.open(path, verify="size")
    feed("size", True, store=used)()  # an untimed epoch: the store's two window buffers exist now

    variants = {
        "sequential file read (disk floor)": lambda: sequential_floor(
            ActivationStore.open(path, verify="size")
        ),
        "main's shuffled reader (2048-row chunks, 64k-row buffer, float32)": lambda: main_reader_batches(
            ActivationStore.open(path, verify="size"), args.read_batch
        ),
        "new feed, stored dtype (the GPU path), no sha256": feed("size", True),
        "new feed, as above, a later epoch (window buffers reused)": feed("size", True, store=used),
        "new feed, stored dtype, sha256 on first read (default)": feed("lazy", True),
        "new feed, float32 (the CPU path), sha256 on first read": feed("lazy", False),
        "new feed, hold ram (load + stream sha256 + serve)": feed("lazy", True, hold=True),
        "vitsae verify (every sha256)": lambda: store_problems(path),
    }
    walls: dict[str, float] = {}
    cpus: dict[str, float] = {}
    for _ in range(args.repeats):  # interleaved, each from a cold cache
        for name, run in variants.items():
            drop_page_cache()
            _, wall, cpu = timed(run)
            walls[name], cpus[name] = min(walls.get(name, wall), wall), min(cpus.get(name, cpu), cpu)
    floor = walls[next(iter(variants))]
    print(
        f"\n| read, one epoch from a cold cache | wall s (best of {args.repeats}) | rows/s | MB/s | "
        "vs floor | CPU s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, t in walls.items():
        print(
            f"| {name} | {t:.2f} | {n_rows / t:,.0f} | {nbytes / t / 1e6:,.0f} | {floor / t:.2f} | "
            f"{cpus[name]:.2f} |"
        )

    image_R = np.arange(n_rows) // 256
    print("\nneighbouring rows of one image in the same batch (epoch 0):")
    for name, chunk, window in (("main's reader", 2048, 65536), ("new feed", chunk_rows, window_rows)):
        order = BatchOrder(
            chunk_spans([e["rows"] for e in store.manifest["shards"]], chunk), 0, True, window // chunk
        )
        share = same_batch_share(order.epoch_row_ids(0), image_R, args.read_batch)
        print(f"  {name}: {share:.3%} (batch / window rows = {args.read_batch / min(window, n_rows):.3%})")


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def harvest_benchmark(args: argparse.Namespace, work: Path) -> None:
    """Harvest overhead over a bare forward pass (interleaved repeats, best wall and CPU time)."""
    model, model_desc = bench_model(args.model)
    source = ShapesDataset(n_images=args.n_images, image_size=64)
    hooks = list(args.hooks)
    loader = ImageLoader(source, model.preprocess, args.batch_size, args.num_workers)
    pixels = [batch.pixels_BCHW for batch in loader]
    print(
        f"model: {model_desc}; hooks {hooks}; {args.n_images} shapes images, batch {args.batch_size}, "
        f"workers {args.num_workers}"
    )

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
            _, wall, cpu = timed(fn)
            walls[name], cpus[name] = min(walls.get(name, wall), wall), min(cpus.get(name, cpu), cpu)
    base = "bare: loader + collect"
    print(f"\n| step | wall s (best of {args.repeats}) | images/s | wall vs bare | CPU s | CPU vs bare |")
    print("|---|---|---|---|---|---|")
    for name in walls:
        print(
            f"| {name} | {walls[name]:.3f} | {args.n_images / walls[name]:.0f} | "
            f"{walls[name] / walls[base]:.3f}x | {cpus[name]:.3f} | {cpus[name] / cpus[base]:.3f}x |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["harvest", "feed", "all"], default="all")
    parser.add_argument("--n-images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument(
        "--hooks", nargs="+", default=["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]
    )
    parser.add_argument("--shard-rows", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="shapes-vit", help="shipped model name to prefer")
    parser.add_argument("--feed-gb", type=float, default=1.0, help="size of the store the feed reads")
    parser.add_argument("--read-batch", type=int, default=4096)
    parser.add_argument("--read-chunk-mib", type=int, default=4, help="the new feed's chunk (train default)")
    parser.add_argument("--shuffle-window-mib", type=int, default=512, help="its window (train default)")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; load: "
        f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}"
    )
    work = Path(tempfile.mkdtemp(prefix="bench_store_"))
    try:
        if args.part in ("harvest", "all"):
            harvest_benchmark(args, work)
        if args.part in ("feed", "all"):
            feed_benchmark(args, work)
    finally:
        shutil.rmtree(work)
    print(
        f"\nmachine: {platform.machine()}, {platform.processor() or 'cpu'}; load after: "
        f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}"
    )


if __name__ == "__main__":
    main()
