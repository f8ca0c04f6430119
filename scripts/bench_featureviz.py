"""Seconds per visualised feature on the CPU: one feature per optimisation against several in one batch.

For the shipped shapes ViT (64 px, SAE at its middle block) and a ViT-B-shaped random model (224 px,
12 blocks of width 768, a random TopK SAE of 24,576 features at block 6), times `optimize` on batches of
1 and of `--batch` features with the Fourier parametrisation, and prints seconds per step and the seconds
one feature costs at `--full-steps` steps (from the measured per-step time).

    python scripts/bench_featureviz.py --threads 2
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from benchtools import best_times

from vitsae.data.preprocess import Preprocess
from vitsae.featureviz import Augment, FourierImage, ImageStatistics, SAEFeature, Site, optimize
from vitsae.models import HookedViT, HookedViTConfig, load
from vitsae.sae import SAEConfig, SparseAutoencoder


def vit_b() -> HookedViT:
    cfg = HookedViTConfig(
        d_model=768, n_layers=12, n_heads=12, d_mlp=3072, image_size=(224, 224), patch_size=16, head_out=1000
    )
    return HookedViT(cfg, Preprocess(size=(224, 224))).eval()


def visualisation(model, sae: SparseAutoencoder, hook: str, batch: int, steps: int) -> Callable[[], None]:
    """A run of `steps` Fourier steps on `batch` features at once, from the same seed each time."""
    size = tuple(model.preprocess.size)
    objective = SAEFeature(Site(hook), sae, tuple(range(batch)))
    stats = ImageStatistics.power_law(*size)

    def run() -> None:
        gen = torch.Generator().manual_seed(0)
        param = FourierImage(batch, size, stats, gen)
        optimize(model, objective, list(range(batch)), param, steps, 0.05, Augment(), gen)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the best counts")
    parser.add_argument("--full-steps", type=int, default=256, help="steps of a real visualisation")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shapes = load("vitsae:shapes-vit").eval()
    cases = [
        ("shapes-vit 64px", shapes, SparseAutoencoder(SAEConfig(d_in=96, architecture="topk", k=16)),
         "blocks.2.hook_resid_post"),
        ("ViT-B-shaped 224px", vit_b(), SparseAutoencoder(SAEConfig(d_in=768, expansion_factor=32,
                                                                    architecture="topk", k=32)),
         "blocks.6.hook_resid_post"),
    ]  # fmt: skip
    print(
        f"| model | features per batch | best wall s / step | best CPU s / step | "
        f"CPU s / feature at {args.full_steps} "
        "steps | speed-up (CPU) |"
    )
    print("|---|---|---|---|---|---|")
    for name, model, sae, hook in cases:
        runs = {batch: visualisation(model, sae.eval(), hook, batch, args.steps) for batch in (1, args.batch)}
        for run in runs.values():
            run()  # warm-up: the first backward of a graph pays one-time costs
        times = best_times(args.repeats, runs, "cpu")
        single = times[1][1] / args.steps
        for batch, (wall, cpu) in times.items():
            per_feature = cpu / args.steps / batch
            print(
                f"| {name} | {batch} | {wall / args.steps:.3f} | {cpu / args.steps:.3f} | "
                f"{per_feature * args.full_steps:.1f} | {single / per_feature:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
