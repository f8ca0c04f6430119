"""`before_after.png`: a few edited images with the model's class probabilities before and after."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from vitsae.data.sources import ImageSource  # noqa: E402
from vitsae.fileio import atomic_path  # noqa: E402


def before_after_figure(
    source: ImageSource,
    rows: list[tuple[int, torch.Tensor, torch.Tensor]],
    class_names: list[str],
    path: Path,
    top: int = 5,
) -> Path:
    """One row per (source index, logits before, logits after): the image and its top classes'
    probabilities before and after."""
    fig, axes = plt.subplots(len(rows), 2, figsize=(7, 2.1 * len(rows)), squeeze=False)
    for (index, before, after), (ax_img, ax_bar) in zip(rows, axes, strict=True):
        ax_img.imshow(source[index].image)
        ax_img.set_axis_off()
        p_before, p_after = before.double().softmax(0), after.double().softmax(0)
        classes = torch.argsort(torch.maximum(p_before, p_after), descending=True)[:top].tolist()
        ys = torch.arange(len(classes), dtype=torch.float64)
        ax_bar.barh(
            ys - 0.2, [float(p_before[c]) for c in classes], height=0.4, label="before", color="#7a7a7a"
        )
        ax_bar.barh(
            ys + 0.2, [float(p_after[c]) for c in classes], height=0.4, label="after", color="#d9480f"
        )
        ax_bar.set_yticks(ys.tolist(), [class_names[c] for c in classes], fontsize=8)
        ax_bar.invert_yaxis()
        ax_bar.set_xlim(0, 1)
        ax_bar.set_title(
            f"#{index}: {class_names[int(p_before.argmax())]} -> {class_names[int(p_after.argmax())]}",
            fontsize=9,
        )
        ax_bar.tick_params(axis="x", labelsize=7)
    axes[0][1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path
