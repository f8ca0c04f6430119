"""Benchmark the spliced forward (an SAE in the model, error term kept) against the plain forward.

Two models: the shipped shapes ViT with a TopK SAE on its middle block (D=96, F=768, k=16; the trained
demo SAE when `--sae` is given, else random), and a ViT-B-shaped random HookedViT (D=768, 12 blocks,
224x224, 197 tokens) with a random TopK SAE (F=24,576, k=32) on block 6. Rows: the plain forward; the
spliced forward with sparse codes (fused/sparse encode + sparse decode) and with dense codes (B x F
codes, dense decode); the same spliced forward with one feature ablated (delta path). Each row is the
best of `--repeats` interleaved runs, under no_grad: wall and process CPU time, and ratios to plain.

    .venv/bin/python scripts/bench_edit.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
from collections.abc import Callable

import torch
from benchtools import best_times

from vitsae.edit import FeatureEdit, SpliceSite, spliced
from vitsae.models import HookedViT, HookedViTConfig, load
from vitsae.sae.config import SAEConfig
from vitsae.sae.io import load_sae
from vitsae.sae.model import SparseAutoencoder


def print_table(title: str, times: dict[str, tuple[float, float]]) -> None:
    print(f"\n{title}")
    print(f"{'run':<44} {'wall ms':>9} {'x plain':>7} {'CPU ms':>9} {'x plain':>7}")
    ref_wall, ref_cpu = times["plain forward"]
    for name, (wall, cpu) in times.items():
        print(
            f"{name:<44} {wall * 1e3:>9.0f} {wall / ref_wall:>7.2f} {cpu * 1e3:>9.0f} {cpu / ref_cpu:>7.2f}"
        )


def random_topk(d_in: int, expansion: int, k: int, hook: str) -> SparseAutoencoder:
    cfg = SAEConfig(d_in=d_in, expansion_factor=expansion, architecture="topk", k=k, hook_name=hook)
    return SparseAutoencoder(cfg, generator=torch.Generator().manual_seed(0)).eval()


def runs_for(model, sae: SparseAutoencoder, pixels: torch.Tensor) -> dict[str, Callable[[], object]]:
    sparse = SparseAutoencoder(sae.cfg).eval()
    sparse.load_state_dict(sae.state_dict())
    sparse.with_config(backend="sparse")
    dense = SparseAutoencoder(sae.cfg).eval()
    dense.load_state_dict(sae.state_dict())
    dense.with_config(backend="dense")
    sparse, dense = sparse.to(pixels.device), dense.to(pixels.device)

    def run_spliced(which: SparseAutoencoder, edits=()):
        def run():
            with spliced(model, [SpliceSite(which)], edits=list(edits)):
                return model(pixels)

        return run

    ablate = [FeatureEdit("ablate", (0,))]
    return {
        "plain forward": lambda: model(pixels),
        "spliced, sparse codes": run_spliced(sparse),
        "spliced, dense codes": run_spliced(dense),
        "spliced, sparse codes, 1 feature ablated": run_spliced(sparse, ablate),
    }


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shapes-batch", type=int, default=64)
    parser.add_argument("--vitb-batch", type=int, default=4)
    parser.add_argument("--sae", default="", help="trained SAE on vitsae:shapes-vit (else a random one)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-vitb", action="store_true")
    args = parser.parse_args()
    device = args.device
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"load average {os.getloadavg()[0]:.1f}, device {device}")

    model = load("vitsae:shapes-vit", device=device)
    hook = "blocks.2.hook_resid_post"
    sae = load_sae(args.sae, device=device) if args.sae else random_topk(96, 8, 16, hook).to(device)
    pixels = torch.randn(args.shapes_batch, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(device)
    title = f"shapes ViT (D=96, 4 blocks, 64 tokens), TopK SAE F={sae.cfg.d_sae} k={sae.cfg.k}"
    title += f", batch {len(pixels)}"
    print_table(title, best_times(args.repeats, runs_for(model, sae, pixels), device))

    if args.skip_vitb:
        return
    torch.manual_seed(0)
    cfg = HookedViTConfig(
        d_model=768, n_layers=12, n_heads=12, d_mlp=3072, image_size=(224, 224), head_out=1000
    )
    vitb = HookedViT(cfg).eval().to(device)
    sae_b = random_topk(768, 32, 32, "blocks.6.hook_resid_post").to(device)
    pixels = torch.randn(args.vitb_batch, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
    title = "ViT-B-shaped random model (D=768, 12 blocks, 197 tokens), TopK SAE F=24,576 k=32"
    title += f", batch {len(pixels)}"
    print_table(title, best_times(args.repeats, runs_for(vitb, sae_b, pixels), device))


if __name__ == "__main__":
    main()
