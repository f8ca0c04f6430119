"""Seconds per visualised feature on the CPU: one feature per optimisation against several in one batch.

For the shipped shapes ViT (64 px, SAE at its middle block) and a ViT-B-shaped random model (224 px,
12 blocks of width 768, a random TopK SAE of 24,576 features at block 6), times `optimize` on batches of
1 and of `--batch` features with the Fourier parametrisation, and prints seconds per step and the seconds
one feature costs at `--full-steps` steps (from the measured per-step time).

    python scripts/bench_featureviz.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from vitsae.data.preprocess import Preprocess
from vitsae.featureviz import Augment, FourierImage, ImageStatistics, SAEFeature, Site, optimize
from vitsae.models import HookedViT, HookedViTConfig, load
from vitsae.sae import SAEConfig, SparseAutoencoder


def vit_b() -> HookedViT:
    cfg = HookedViTConfig(
        d_model=768, n_layers=12, n_heads=12, d_mlp=3072, image_size=(224, 224), patch_size=16, head_out=1000
    )
    return HookedViT(cfg, Preprocess(size=(224, 224))).eval()


def seconds_per_step(model, sae: SparseAutoencoder, hook: str, batch: int, steps: int) -> tuple[float, float]:
    """(wall, process CPU) seconds per optimisation step; CPU time is the steadier on a shared machine."""
    size = tuple(model.preprocess.size)
    objective = SAEFeature(Site(hook), sae, tuple(range(batch)))
    stats = ImageStatistics.power_law(*size)

    def run(n_steps: int) -> None:
        gen = torch.Generator().manual_seed(0)
        param = FourierImage(batch, size, stats, gen)
        optimize(model, objective, list(range(batch)), param, n_steps, 0.05, Augment(), gen)

    run(1)  # warm-up, untimed
    wall, cpu = time.perf_counter(), time.process_time()
    run(steps)
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
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
        f"| model | features per batch | wall s / step | CPU s / step | CPU s / feature at {args.full_steps} "
        "steps | speed-up (CPU) |"
    )
    print("|---|---|---|---|---|---|")
    for name, model, sae, hook in cases:
        for batch in (1, args.batch):
            wall, cpu = seconds_per_step(model, sae.eval(), hook, batch, args.steps)
            if batch == 1:
                single = cpu
            per_feature = cpu / batch
            print(
                f"| {name} | {batch} | {wall:.3f} | {cpu:.3f} | {per_feature * args.full_steps:.1f} | "
                f"{single / per_feature:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
