"""Draw docs/img/dissection.png: for some concepts, the best SAE feature's thresholded map beside the mask.

Reads a `vitsae dissect` output folder (dissection.json names the SAE, the model, the hook and the source),
picks for each concept its best SAE feature, and shows on the first images holding the concept: the image,
the concept's mask, and the pixels where the feature is above its threshold (bilinear upsampling, as
dissected), with the feature's IoU (and its interval where the concept is the feature's best or runner-up).

    .venv/bin/python scripts/dissection_figure.py runs/dissect/vit docs/img/dissection.png \
        --concepts size:large shape:ring colour:blue background:noise
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from vitsae.analysis.dissection import SAEBasis, maps_to_masks  # noqa: E402
from vitsae.data.open import source_from_description  # noqa: E402
from vitsae.fileio import read_json  # noqa: E402
from vitsae.models import load  # noqa: E402
from vitsae.sae.io import load_sae  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dissection", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--concepts", nargs="+", required=True)
    parser.add_argument("--images", type=int, default=3)
    args = parser.parse_args()
    info = read_json(args.dissection / "dissection.json")
    meta = info["meta"]
    model, sae = load(meta["model"]), load_sae(meta["sae"])
    basis = SAEBasis(sae)
    source = source_from_description(meta["source"])
    layout = model.token_layout(meta["hook"])
    records = {r["concept"]: r for r in info["bases"]["sae"]["concepts"]}
    units = info["bases"]["sae"]["units"]
    fig, axes = plt.subplots(
        len(args.concepts), 3 * args.images, figsize=(1.5 * 3 * args.images, 1.9 * len(args.concepts))
    )
    for row, concept in enumerate(args.concepts):
        unit = records[concept]["unit"]
        record = units[unit]
        shown = 0
        for index in range(len(source)):
            masks = source.masks(index)
            if concept not in masks or shown == args.images:
                continue
            pixels = model.preprocess(source[index].image)[None]
            acts = model.collect(pixels, [meta["hook"]])[meta["hook"]][:, layout.n_prefix :]
            units_a, maps_aP = basis.image_maps(basis.prepare(acts), 0)
            grid = torch.zeros(layout.grid_hw)
            hit = (units_a == unit).nonzero()
            if len(hit):
                grid = maps_aP[hit[0, 0]].reshape(layout.grid_hw)
            upsampled = maps_to_masks(grid[None], masks[concept].shape, "bilinear")[0]
            on = (upsampled > (record["threshold"] or float("inf"))).numpy()
            image = np.asarray(source[index].image)
            for col, (picture, title) in enumerate(
                [(image, f"image {index}"), (masks[concept], concept), (on, f"feature {unit}")]
            ):
                ax = axes[row, 3 * shown + col]
                ax.imshow(picture, cmap=None if picture.ndim == 3 else "gray", interpolation="nearest")
                if shown or col:  # the row's first panel carries the row label instead
                    ax.set_title(title, fontsize=7)
                ax.axis("off")
            shown += 1
        interval = ""
        if record["concept"] == concept:
            interval = " [{:.2f}, {:.2f}]".format(*record["ci"])
        elif record.get("runner_up") == concept:
            interval = " [{:.2f}, {:.2f}]".format(*record["runner_up_ci"])
        label = f"{concept}: feature {unit}\nIoU {records[concept]['iou']:.2f}{interval}"
        axes[row, 0].set_title(label, fontsize=8, loc="left")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)


if __name__ == "__main__":
    main()
