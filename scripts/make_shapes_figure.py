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
    from matplotlib.patches import Patch

    palette = plt.get_cmap("tab10").colors
    n_cols = 1 + len(_FAMILIES)
    fig, axes = plt.subplots(len(indices), n_cols, figsize=(1.7 * n_cols, 2.2 * len(indices)), squeeze=False)
    for row, index in enumerate(indices):
        sample = dataset.sample(index)
        axes[row, 0].imshow(sample.image_HWC, interpolation="nearest")
        axes[row, 0].set_title(f"#{index}: {CLASS_NAMES[sample.label]}", fontsize=8)
        for col, family in enumerate(_FAMILIES, start=1):
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
