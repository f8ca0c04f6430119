"""Benchmark hooked models against their transformers references (random weights, CPU or GPU).

ViT: a transformers ViTModel (default ViT-S/16 size at 224x224) against its HookedViT conversion run
(a) plainly (fused attention: no hook looks at the pattern), (b) with a no-op hook on every
`hook_pattern` (explicit attention), (c) `run_with_cache` of every hook, (d) `collect` of a middle
layer's residual stream (stops early) and (e) `collect` of the last layer's. ResNet: a transformers
ResNet-50-shaped model against `HookedModule` plainly and `collect` of stage 2. Each row is the best of
`--repeats` interleaved runs: wall and process CPU time, and their ratios to the reference.

    .venv/bin/python scripts/bench_models.py --batch-size 8
"""

from __future__ import annotations

import argparse
import platform

import torch
import transformers as hf
from benchtools import best_times

from vitsae.data.preprocess import Preprocess
from vitsae.models import HookedModule, hooked_vit_from_hf


def print_table(title: str, times: dict[str, tuple[float, float]], reference: str, batch: int) -> None:
    print(f"\n{title}")
    print(f"{'run':<44} {'wall ms':>9} {'x ref':>6} {'CPU ms':>9} {'x ref':>6}")
    ref_wall, ref_cpu = times[reference]
    for name, (wall, cpu) in times.items():
        print(
            f"{name:<44} {wall * 1e3:>9.0f} {wall / ref_wall:>6.2f} {cpu * 1e3:>9.0f} {cpu / ref_cpu:>6.2f}"
        )


@torch.no_grad()
def bench_vit(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    cfg = hf.ViTConfig(
        hidden_size=args.width, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        intermediate_size=4 * args.width, image_size=args.image_size, patch_size=16,
    )  # fmt: skip
    ref = hf.ViTModel(cfg).eval().to(args.device, args.dtype)
    model = hooked_vit_from_hf(ref).to(args.device, args.dtype)
    pixels = torch.randn(
        args.batch_size, 3, args.image_size, args.image_size, device=args.device, dtype=args.dtype
    )
    middle, last = args.layers // 2 - 1, args.layers - 1
    patterns = [(f"blocks.{i}.attn.hook_pattern", lambda acts, hook: None) for i in range(args.layers)]
    runs = {
        "transformers ViTModel (reference)": lambda: ref(pixels),
        "HookedViT forward (fused attention)": lambda: model(pixels),
        "HookedViT forward, pattern hooks (explicit)": lambda: model.run_with_hooks(
            pixels, fwd_hooks=patterns
        ),
        "HookedViT run_with_cache (every hook)": lambda: model.run_with_cache(pixels),
        f"HookedViT collect blocks.{middle}.hook_resid_post": lambda: model.collect(
            pixels, [f"blocks.{middle}.hook_resid_post"]
        ),
        f"HookedViT collect blocks.{last}.hook_resid_post": lambda: model.collect(
            pixels, [f"blocks.{last}.hook_resid_post"]
        ),
    }
    walls = best_times(args.repeats, runs, args.device)
    title = (f"ViT: width {args.width}, {args.layers} layers, {args.heads} heads, patch 16, "
             f"{args.image_size}x{args.image_size}, batch {args.batch_size}, {args.dtype}")  # fmt: skip
    print_table(title, walls, "transformers ViTModel (reference)", args.batch_size)


@torch.no_grad()
def bench_resnet(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    ref = hf.ResNetForImageClassification(hf.ResNetConfig()).eval().to(args.device, args.dtype)  # ResNet-50
    size = (args.image_size, args.image_size)
    wrapped = HookedModule(ref, Preprocess(size=size)).to(args.device, args.dtype)
    pixels = torch.randn(args.batch_size, 3, *size, device=args.device, dtype=args.dtype)
    runs = {
        "transformers ResNet-50 (reference)": lambda: ref(pixels),
        f"HookedModule forward ({len(wrapped.hook_names())} hook points)": lambda: wrapped(pixels),
        "HookedModule collect resnet.encoder.stages.2": lambda: wrapped.collect(
            pixels, ["resnet.encoder.stages.2"]
        ),
    }
    walls = best_times(args.repeats, runs, args.device)
    title = f"ResNet-50 shape, {args.image_size}x{args.image_size}, batch {args.batch_size}, {args.dtype}"
    print_table(title, walls, "transformers ResNet-50 (reference)", args.batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args()
    args.dtype = getattr(torch, args.dtype)
    device = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "CPU"
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, transformers {hf.__version__}, {device}, {threads} threads")
    bench_vit(args)
    bench_resnet(args)


if __name__ == "__main__":
    main()
