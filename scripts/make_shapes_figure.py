"""The picture of the shapes dataset in docs/shapes.md: generated images beside their concept masks, one
column per concept family.

    .venv/bin/python scripts/make_shapes_figure.py --seed 0 --n-images 8 --rows 6 --out docs/img/shapes.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vitsae.data.shapes import CLASS_NAMES, CONCEPT_FAMILIES, ShapesDataset
from vitsae.fileio import atomic_path


def plot_shapes_grid(dataset: ShapesDataset, indices: list[int], path: str | Path) -> Path:
    """Save a PNG grid: per image (row) the image, then each family's masks as a coloured label map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    palette = plt.get_cmap("tab10").colors
    n_cols = 1 + len(CONCEPT_FAMILIES)
    fig, axes = plt.subplots(len(indices), n_cols, figsize=(1.7 * n_cols, 2.2 * len(indices)), squeeze=False)
    for row, index in enumerate(indices):
        sample = dataset.sample(index)
        axes[row, 0].imshow(sample.image_HWC, interpolation="nearest")
        axes[row, 0].set_title(f"#{index}: {CLASS_NAMES[sample.label]}", fontsize=8)
        for col, family in enumerate(CONCEPT_FAMILIES, start=1):
            canvas = np.full(sample.image_HWC.shape, 0.92, dtype=np.float32)
            handles = []
            for value_at, value in enumerate(CONCEPT_FAMILIES[family]):
                mask = sample.masks.get(f"{family}:{value}")
                if mask is not None:
                    canvas[mask] = palette[value_at % len(palette)]
                    handles.append(Patch(color=palette[value_at % len(palette)], label=value))
            axes[row, col].imshow(canvas, interpolation="nearest")
            axes[row, col].set_title(family, fontsize=8)
            axes[row, col].legend(
                handles=handles,
                fontsize=6,
                loc="upper center",
                bbox_to_anchor=(0.5, 0.0),
                ncol=2,
                frameon=False,
                handlelength=0.8,
                columnspacing=0.6,
            )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    parser.add_argument("--n-images", type=int, default=8, help="images in the dataset")
    parser.add_argument("--rows", type=int, default=6, help="images drawn (the first ones)")
    parser.add_argument("--out", type=Path, default=Path("docs/img/shapes.png"), help="PNG to write")
    args = parser.parse_args()
    dataset = ShapesDataset(seed=args.seed, n_images=args.n_images)
    print(plot_shapes_grid(dataset, list(range(args.rows)), args.out))


if __name__ == "__main__":
    main()
