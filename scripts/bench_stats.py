"""Benchmark the feature-statistics pass and the browser index.

Statistics: tokens per second through `FeatureStatsAccumulator.update` on generated TopK codes (whole
images of 1 + 14x14 tokens, K active features per token), against a dense baseline that does only part of
the work: scatter the batch's codes into a dense [images, T, F] tensor, take the max over T and merge it
into a running [F, k] top-k of images (no maps, patches, histogram or sample).
Browser: seconds to write the index (no pages) of F features with `write_browser`.

    .venv/bin/python scripts/bench_stats.py --features 4096 16384 50000 --images-per-batch 32
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from vitsae.analysis.stats import FeatureStatsAccumulator, StatsConfig
from vitsae.report.browser import BrowserConfig, write_browser
from vitsae.tokens import TokenLayout

GRID = TokenLayout(n_cls=1, n_registers=0, grid_hw=(14, 14), width=768)
N_TOKENS = 1 + 14 * 14


def generated_batches(n_features: int, k: int, n_batches: int, images_per_batch: int):
    """Codes of whole images: K distinct features per token, values in (0, 4)."""
    gen = torch.Generator().manual_seed(0)
    rows = images_per_batch * N_TOKENS
    batches = []
    for b in range(n_batches):
        indices = torch.randint(0, n_features, (rows, k), generator=gen, dtype=torch.int64)
        values = torch.rand((rows, k), generator=gen) * 4
        image = torch.arange(b * images_per_batch, (b + 1) * images_per_batch).repeat_interleave(N_TOKENS)
        token = torch.arange(N_TOKENS).repeat(images_per_batch)
        batches.append((indices.int(), values, image, token))
    return batches


def run_accumulator(n_features: int, batches, config: StatsConfig) -> float:
    acc = FeatureStatsAccumulator(n_features, GRID, config)
    start = time.perf_counter()
    for batch in batches:
        acc.update(*batch)
    acc.finish()
    return time.perf_counter() - start


def run_dense_baseline(n_features: int, batches, k_images: int) -> float:
    scores_Fk = torch.full((n_features, k_images), float("-inf"))
    start = time.perf_counter()
    for indices, values, image, token in batches:
        n_images = int(image.max() - image.min() + 1)
        dense_ITF = torch.zeros((n_images, N_TOKENS, n_features))
        local = (image - image.min())[:, None].expand_as(indices)
        dense_ITF[local, token[:, None].expand_as(indices), indices.long()] = values
        per_image_FI = dense_ITF[:, GRID.n_prefix :].amax(1).T
        scores_Fk = torch.topk(torch.cat([scores_Fk, per_image_FI], 1), k_images, dim=1).values
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, nargs="+", default=[4096, 16384, 50000])
    parser.add_argument("--k-active", type=int, default=32)
    parser.add_argument("--images-per-batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = StatsConfig()
    tokens = args.batches * args.images_per_batch * N_TOKENS
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads; "
        f"{args.batches} batches of {args.images_per_batch} images x {N_TOKENS} tokens, K={args.k_active}, "
        f"k_images={config.k_images}, k_patches={config.k_patches}, n_samples={config.n_samples}"
    )
    print(
        "| F | accumulator (all statistics) tok/s | dense baseline (top images only) tok/s | "
        "accumulator memory MB | browser index write s |"
    )
    print("|---|---|---|---|---|")
    for n_features in args.features:
        batches = generated_batches(n_features, args.k_active, args.batches, args.images_per_batch)
        run_accumulator(n_features, batches[:1], config)  # warm-up
        acc_s = run_accumulator(n_features, batches, config)
        dense_bytes = args.images_per_batch * N_TOKENS * n_features * 4
        if dense_bytes <= 2 << 30:
            dense = f"{tokens / run_dense_baseline(n_features, batches, config.k_images):,.0f}"
        else:
            dense = f"skipped ({dense_bytes / 2**30:.1f} GiB per batch)"
        memory = n_features * (
            config.k_images * (GRID.n_patches + 4 + 8 + 8)
            + config.k_patches * 20
            + config.n_samples * 24
            + config.hist_bins * 8
            + 32
        )
        acc = FeatureStatsAccumulator(n_features, GRID, config)
        for batch in batches[:2]:
            acc.update(*batch)
        stats = acc.finish()
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            write_browser(stats, Path(tmp) / "site", features=[], config=BrowserConfig(progress=False))
            browser_s = time.perf_counter() - start
        print(f"| {n_features} | {tokens / acc_s:,.0f} | {dense} | {memory / 2**20:.0f} | {browser_s:.2f} |")


if __name__ == "__main__":
    main()
