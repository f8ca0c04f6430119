"""Benchmark `vitsae dissect` against one `vitsae stats` pass over the same images.

Both sides run the shipped shapes CNN's middle stage (`resnet.encoder.stages.1`, an 8x8 grid of width 64)
and the same TopK SAE (untrained, seeded: cost depends on F and k, not on what the features mean). The
baseline is the statistics pass a user runs anyway: `compute_feature_stats` over a store harvested from the
images (harvest timed separately). Dissection is timed three ways: SAE only with thresholds from the stats
histograms (one pass), SAE only with its own threshold pass, and with the neuron and rotated baselines.
Three floor rows time what any dissection pass must do before it counts a pixel: render the images and
their masks, run the model to the hook, and SAE-encode every patch. Wall and process CPU seconds are both
printed; the ratios use CPU time, the steadier on a shared machine.

    .venv/bin/python scripts/bench_dissect.py --images 10000 --features 4096 --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from functools import partial
from pathlib import Path

import torch
from benchtools import timed

from vitsae.analysis.compute import compute_feature_stats
from vitsae.analysis.dissection import (
    DenseBasis,
    DissectConfig,
    Run,
    SAEBasis,
    dissect,
    random_rotation,
    thresholds_from_stats,
)
from vitsae.data.shapes import ShapesDataset
from vitsae.models import load
from vitsae.sae.config import SAEConfig
from vitsae.sae.model import SparseAutoencoder
from vitsae.store import HarvestConfig, harvest

MODEL, HOOK = "vitsae:shapes-cnn", "resnet.encoder.stages.1"


def floor_rows(model, sae: SparseAutoencoder, n_images: int) -> list[tuple[str, float, float]]:
    """Render (with preprocessing), forward and encode timed apart, on a fresh source (nothing cached)."""
    source = ShapesDataset(n_images=n_images, seed=4)
    n_prefix = model.token_layout(HOOK).n_prefix

    def render() -> list[torch.Tensor]:
        pixels = []
        for start in range(0, n_images, 64):
            indices = range(start, min(start + 64, n_images))
            pixels.append(torch.stack([model.preprocess(source[i].image) for i in indices]))
            for i in indices:
                source.masks(i)
        return pixels

    def forward(pixels: list[torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            return [model.collect(pixels_BCHW, [HOOK])[HOOK][:, n_prefix:, :] for pixels_BCHW in pixels]

    def encode(acts: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for acts_BPD in acts:
                sae.encode_sparse(acts_BPD.reshape(-1, acts_BPD.shape[-1]).float())

    pixels, r_wall, r_cpu = timed(render)
    acts, f_wall, f_cpu = timed(partial(forward, pixels))
    _, e_wall, e_cpu = timed(partial(encode, acts))
    return [
        ("floor: render images + masks", r_wall, r_cpu),
        ("floor: model to the hook", f_wall, f_cpu),
        ("floor: SAE encode", e_wall, e_cpu),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--threshold-images", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load(MODEL)
    width = model.token_layout(HOOK).width
    cfg = SAEConfig(
        d_in=width, expansion_factor=args.features // width, architecture="topk", k=args.k, hook_name=HOOK
    )
    sae = SparseAutoencoder(cfg, generator=torch.Generator().manual_seed(0)).eval()
    source = ShapesDataset(n_images=args.images, seed=3)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        config = HarvestConfig(
            model=MODEL, source=f"shapes:{args.images}:3", hooks=(HOOK,), out=Path(tmp), progress=False
        )
        stores, wall, cpu = timed(lambda: harvest(config, model=model, source=source))
        rows.append(("harvest (store for stats)", wall, cpu))
        stats, wall, cpu = timed(lambda: compute_feature_stats(stores[HOOK], sae))
        rows.append(("vitsae stats pass", wall, cpu))
    rows += floor_rows(model, sae, args.images)
    dcfg = DissectConfig(threshold_images=args.threshold_images)
    timings = [
        (
            "dissect, thresholds from stats",
            [SAEBasis(sae)],
            {"sae": thresholds_from_stats(stats, dcfg.quantile)},
        ),
        ("dissect, own threshold pass", [SAEBasis(sae)], None),
        (
            "dissect + neurons + rotated",
            [
                SAEBasis(sae),
                DenseBasis(width, "neurons"),
                DenseBasis(width, "rotated", random_rotation(width, 0)),
            ],
            None,
        ),
    ]
    for name, bases, thresholds in timings:
        quantiles = {b.name: dcfg.quantile if b.sparse else dcfg.baseline_quantile for b in bases}
        runs = [Run(model, bases, quantiles)]
        _, wall, cpu = timed(partial(dissect, runs, HOOK, source, dcfg, thresholds=thresholds, batch_size=64))
        rows.append((name, wall, cpu))
    print(
        f"{args.images} shapes images, {MODEL} {HOOK}, TopK SAE F={args.features} k={args.k}, "
        f"{args.threads} threads, {platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.1f}"
    )
    stats_cpu = rows[1][2]
    both_cpu = rows[0][2] + stats_cpu
    print("| pass | wall s | CPU s | x stats (CPU) | x harvest + stats (CPU) |")
    print("|---|---:|---:|---:|---:|")
    for name, wall, cpu in rows:
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {cpu / stats_cpu:.2f} | {cpu / both_cpu:.2f} |")


if __name__ == "__main__":
    main()
