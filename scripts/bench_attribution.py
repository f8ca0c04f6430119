"""Attribution speed: images per second per method, against a plain forward pass in the same run.

Models: the shipped shapes ViT (64 px) and a randomly initialised ViT-B/16-shaped HookedViT at 224 px
(12 layers, width 768, 1000 classes). Each measurement runs in its own subprocess, so its peak resident
memory (ru_maxrss) is its own; each shapes-ViT row is the best of `--repeats` timings after a warm-up
(one timing for the ViT-B rows, which are slow). Besides wall-clock images/s it reports the process's
CPU seconds per image, which a shared, loaded machine distorts far less. Integrated gradients is measured
at several `--ig-internal-batch-size` values, the knob that bounds its memory (steps x images are pushed
through the model in chunks of it).

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

METHODS = ["saliency", "gradxinput", "smoothgrad:saliency", "gradcam", "occlusion", "rise"]
IG_BATCHES = [8, 32, 64, 128]


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


def measure(model_name: str, method: str, n_images: int, threads: int, settings: dict, repeats: int) -> dict:
    """One row: the best of `repeats` timings of `method` (or `forward`) on `n_images` random images."""
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
    if method != "forward" and repeats > 1:
        attribute(fn, method, pixels[:1], classes[:1], cfg)
    seconds, cpu_seconds = float("inf"), float("inf")
    for _ in range(repeats):
        began, cpu_began = time.perf_counter(), time.process_time()
        if method == "forward":
            with torch.no_grad():
                fn(pixels, classes)
        else:
            attribute(fn, method, pixels, classes, cfg)
        seconds = min(seconds, time.perf_counter() - began)
        cpu_seconds = min(cpu_seconds, time.process_time() - cpu_began)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "seconds": seconds,
        "images_per_s": n_images / seconds,
        "cpu_s_per_image": cpu_seconds / n_images,
        "peak_rss_mb": peak_mb,
    }


def run_one(model_name: str, method: str, n_images: int, threads: int, settings: dict, repeats: int) -> dict:
    row = [model_name, method, n_images, threads, settings, repeats]
    command = [sys.executable, __file__, "--one", json.dumps(row)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes-images", type=int, default=8)
    parser.add_argument("--vitb-images", type=int, default=1)
    parser.add_argument("--ig-steps", type=int, default=32)
    parser.add_argument("--rise-masks", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings (shapes ViT)")
    parser.add_argument("--models", nargs="+", default=["shapes-vit", "vitb-224"])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*json.loads(args.one))))
        return
    print(f"threads {args.threads}; load average {os.getloadavg()[0]:.2f} at start")
    print(
        "| model | method | settings | images | images/s (wall) | CPU s/image | x forward CPU | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for model_name in args.models:
        n_images = args.shapes_images if model_name == "shapes-vit" else args.vitb_images
        base = {"ig_steps": args.ig_steps, "smoothgrad_samples": 16, "rise_masks": args.rise_masks}
        ig_batches = IG_BATCHES
        if model_name == "vitb-224":  # at 3 CPU-seconds a forward, the perturbation counts are cut
            base = {"ig_steps": 8, "smoothgrad_samples": 4, "rise_masks": 32, "occlusion_window": 32}
            ig_batches = [2, 8]
        rows = [("forward", {})] + [(m, {}) for m in METHODS]
        rows += [("ig", {"ig_internal_batch_size": size}) for size in ig_batches]
        forward_cpu = None
        for method, extra in rows:
            settings = {**base, **extra}
            repeats = args.repeats if model_name == "shapes-vit" else 1
            result = run_one(model_name, method, n_images, args.threads, settings, repeats)
            forward_cpu = forward_cpu or result["cpu_s_per_image"]
            shown = {k: v for k, v in settings.items() if k.split("_")[0] in method}
            print(
                f"| {model_name} | {method} | {json.dumps(shown) if shown else '-'} | {n_images} | "
                f"{result['images_per_s']:.3f} | {result['cpu_s_per_image']:.3f} | "
                f"{result['cpu_s_per_image'] / forward_cpu:.1f} | "
                f"{result['peak_rss_mb']:.0f} |",
                flush=True,
            )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
