"""Attribution speed: images per second per method, against a plain forward pass in the same run.

Models: the shipped shapes ViT (64 px) and a randomly initialised ViT-B/16-shaped HookedViT at 224 px
(12 layers, width 768, 1000 classes). Each measurement runs in its own subprocess, so its peak resident
memory (ru_maxrss) is its own; integrated gradients is measured at several `--ig-internal-batch-size`
values, the knob that bounds its memory (steps x images are pushed through the model in chunks of it).

    PYTHONPATH=. python scripts/bench_attribution.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SHAPES_METHODS = ["saliency", "gradxinput", "ig", "smoothgrad:saliency", "gradcam", "occlusion", "rise"]
IG_BATCHES = [8, 32, 128]


def build(model_name: str):
    import torch

    from vitsae.models import HookedViT, HookedViTConfig, load

    if model_name == "shapes-vit":
        return load("vitsae:shapes-vit"), 64
    cfg = HookedViTConfig(
        d_model=768, n_layers=12, n_heads=12, d_mlp=3072, image_size=(224, 224), head_out=1000
    )
    torch.manual_seed(0)
    return HookedViT(cfg).eval(), 224


def measure(model_name: str, method: str, n_images: int, threads: int, settings: dict) -> dict:
    """One row: seconds and images/s of `method` (or `forward`) on `n_images` random images."""
    import torch

    from vitsae.attribution import MethodConfig, Target, TargetFunction, attribute

    torch.set_num_threads(threads)
    model, side = build(model_name)
    for param in model.parameters():
        param.requires_grad_(False)
    pixels = torch.randn(n_images, 3, side, side, generator=torch.Generator().manual_seed(0))
    fn = TargetFunction(model, Target.parse("class:pred"))
    classes = fn.classes_for(pixels, torch.zeros(n_images, dtype=torch.int64))
    cfg = MethodConfig(**settings)
    with torch.no_grad():
        fn(pixels[:1], classes[:1])  # warm-up: first-call allocations and lazy imports are not timed
    if method != "forward":
        attribute(fn, method, pixels[:1], classes[:1], cfg)
    began = time.perf_counter()
    if method == "forward":
        with torch.no_grad():
            fn(pixels, classes)
    else:
        attribute(fn, method, pixels, classes, cfg)
    seconds = time.perf_counter() - began
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "images_per_s": n_images / seconds, "peak_rss_mb": peak_mb}


def run_one(model_name: str, method: str, n_images: int, threads: int, settings: dict) -> dict:
    command = [
        sys.executable,
        __file__,
        "--one",
        json.dumps([model_name, method, n_images, threads, settings]),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes-images", type=int, default=8)
    parser.add_argument("--vitb-images", type=int, default=2)
    parser.add_argument("--ig-steps", type=int, default=32)
    parser.add_argument("--rise-masks", type=int, default=250)
    parser.add_argument("--models", nargs="+", default=["shapes-vit", "vitb-224"])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*json.loads(args.one))))
        return
    print(f"threads {args.threads}; load average {os.getloadavg()[0]:.2f} at start")
    print("| model | method | settings | images | images/s | x forward | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for model_name in args.models:
        n_images = args.shapes_images if model_name == "shapes-vit" else args.vitb_images
        base = {"ig_steps": args.ig_steps, "smoothgrad_samples": 16, "rise_masks": args.rise_masks}
        rows = [("forward", {})] + [
            (m, {"ig_internal_batch_size": 64} if m == "ig" else {}) for m in SHAPES_METHODS
        ]
        rows += [("ig", {"ig_internal_batch_size": size}) for size in IG_BATCHES if size != 64]
        forward_rate = None
        for method, extra in rows:
            settings = {**base, **extra}
            result = run_one(model_name, method, n_images, args.threads, settings)
            forward_rate = forward_rate or result["images_per_s"]
            shown = {k: v for k, v in settings.items() if k.split("_")[0] in method}
            print(
                f"| {model_name} | {method} | {json.dumps(shown) if shown else '-'} | {n_images} | "
                f"{result['images_per_s']:.3f} | {result['images_per_s'] / forward_rate:.4f} | "
                f"{result['peak_rss_mb']:.0f} |",
                flush=True,
            )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
