"""A picture of the shapes dataset: generated images beside their concept masks, one column per family."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vitsae.data.shapes import CLASS_NAMES, CONCEPT_FAMILIES, ShapesDataset
from vitsae.fileio import atomic_path

_FAMILIES = ("shape", "colour", "texture", "size", "position", "background")


def plot_shapes_grid(dataset: ShapesDataset, indices: list[int], path: str | Path) -> Path:
    """Save a PNG grid: per image (row) the image, then each family's masks as a coloured label map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    palette = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(len(indices), 1 + len(_FAMILIES), figsize=(1.9 * (1 + len(_FAMILIES)),
                                                                          2.0 * len(indices)), squeeze=False)
    for row, index in enumerate(indices):
        sample = dataset.sample(index)
        axes[row, 0].imshow(sample.image_HWC, interpolation="nearest")
        axes[row, 0].set_title(f"#{index}: {CLASS_NAMES[sample.label]}", fontsize=8)
        for col, family in enumerate(_FAMILIES, start=1):
            canvas = np.full(sample.image_HWC.shape, 0.92, dtype=np.float32)
            names = []
            for value_at, value in enumerate(CONCEPT_FAMILIES[family]):
                mask = sample.masks.get(f"{family}:{value}")
                if mask is not None:
                    canvas[mask] = palette[value_at % len(palette)]
                    names.append(value)
            axes[row, col].imshow(canvas, interpolation="nearest")
            axes[row, col].set_title(f"{family}\n" + ", ".join(names), fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
