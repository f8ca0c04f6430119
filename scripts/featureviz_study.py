"""The worked example of docs/featureviz.md: does each method make its target fire, and do class images
show the class's colour group?

1. SAE features: the `--features` most active features of an SAE on the shipped shapes ViT, visualised by
   every method; prints, per method, the ratio of the value reached to the feature's maximum over real
   images (median, quartiles, share >= 1).
2. Classes: one image per class logit per method; prints the logit reached against the class's maximum
   over real images, and the share of warm hues among the image's saturated pixels (the class label says
   whether the large object is warm or cool, docs/shapes.md).
Writes every run under --out and a figure of the class images.

    python scripts/featureviz_study.py --sae runs/demo/sae/<run> --out runs/featureviz-study
"""

from __future__ import annotations

import argparse
import colorsys
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vitsae.featureviz import VisualizeConfig, visualize_targets
from vitsae.models import load
from vitsae.sae import load_sae

METHODS = ("fourier", "maco", "pixel", "vital")


def warm_share(image_3HW: torch.Tensor, min_saturation: float = 0.35) -> float:
    """Share of warm hues (red-yellow, 0-70 and 330-360 degrees) among pixels of saturation >= 0.35."""
    warm = cool = 0
    for r, g, b in image_3HW.permute(1, 2, 0).reshape(-1, 3).tolist():
        hue, saturation, value = colorsys.rgb_to_hsv(r, g, b)
        if saturation < min_saturation or value < 0.2:
            continue
        degrees = hue * 360
        if degrees < 70 or degrees >= 330:
            warm += 1
        elif 90 <= degrees < 270:
            cool += 1
    return warm / (warm + cool) if warm + cool else float("nan")


def quartiles(values: list[float]) -> str:
    q1, q2, q3 = np.quantile(values, [0.25, 0.5, 0.75])
    return f"{q2:.2f} | {q1:.2f}-{q3:.2f} | {np.mean(np.asarray(values) >= 1):.0%}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="vitsae:shapes-vit")
    parser.add_argument("--sae", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--features", type=int, default=48)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--reference", default="shapes:512:99")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load(args.model).eval()
    sae = load_sae(args.sae)
    common = dict(model=args.model, steps=args.steps, reference_source=args.reference, progress=False)

    print(f"## SAE features ({args.features} most active, {args.steps} steps)\n")
    print("| method | ratio to dataset max: median | quartiles | share >= 1 |\n|---|---|---|---|")
    for method in args.methods:
        cfg = VisualizeConfig(
            out=args.out / f"features-{method}",
            sae=args.sae,
            features=f"top:{args.features}",
            method=method,
            **common,
        )
        record = visualize_targets(cfg, model, sae)
        ratios = [t["ratio"][0] for t in record["targets"] if t["ratio"][0] is not None]
        median, spread, share = quartiles(ratios).split(" | ")
        print(f"| {method} | {median} | {spread} | {share} |", flush=True)

    print(f"\n## Classes ({args.steps} steps)\n")
    names = None
    rows, picture = [], []
    for method in [m for m in args.methods if m != "vital"]:
        cfg = VisualizeConfig(
            out=args.out / f"classes-{method}",
            target="class",
            features="0,1,2,3,4,5,6,7",
            method=method,
            **common,
        )
        record = visualize_targets(cfg, model)
        names = [t["name"] for t in record["targets"]]
        images = [
            np.asarray(Image.open(args.out / f"classes-{method}" / "images" / t["images"][0]))
            for t in record["targets"]
        ]
        picture.append(np.concatenate(images, axis=1))
        shares = [warm_share(torch.from_numpy(im).permute(2, 0, 1).float() / 255) for im in images]
        ratios = [t["ratio"][0] for t in record["targets"]]
        rows.append((method, ratios, shares))
    print("| method | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for method, ratios, shares in rows:
        cells = [f"{r:.2f} / {s:.0%}" for r, s in zip(ratios, shares, strict=True)]
        print(f"| {method} | " + " | ".join(cells) + " |")
    Image.fromarray(np.concatenate(picture, axis=0)).resize(
        (picture[0].shape[1] * 2, len(picture) * picture[0].shape[0] * 2), Image.NEAREST
    ).save(args.out / "classes.png")
    (args.out / "study.json").write_text(json.dumps({"classes": names, "rows": rows}, default=float))
    print(f"\nfigure: {args.out / 'classes.png'} (rows: {', '.join(r[0] for r in rows)})")


if __name__ == "__main__":
    main()
