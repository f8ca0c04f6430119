"""Training metrics: one JSONL file per SAE, TensorBoard when it is installed, and a PNG of the curves."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from vitsae.fileio import atomic_path

# log10 firing-frequency bin edges of the feature-density histogram; never-fired features go in bin 0.
DENSITY_EDGES: tuple[float, ...] = (-math.inf, -7, -6, -5, -4, -3, -2, -1, 0.0)
CURVES: tuple[str, ...] = (
    "loss",
    "mse",
    "fvu",
    "l0",
    "l1",
    "l1_coefficient",
    "dead_fraction",
    "rare_fraction",
    "duplicate_fraction",
    "dense_fraction",
    "lr",
)


def density_histogram(frequency_F: torch.Tensor) -> list[int]:
    """Counts of features per log10(firing frequency) bin of `DENSITY_EDGES` (zero frequency: first bin)."""
    log_f = torch.log10(frequency_F.double().clamp_min(1e-300))
    edges = torch.tensor(DENSITY_EDGES[1:-1], dtype=torch.float64)
    return torch.bincount(torch.bucketize(log_f, edges), minlength=len(DENSITY_EDGES) - 1).tolist()


class MetricsLog:
    """Appends metric records to `<run_dir>/metrics.jsonl` (and TensorBoard if importable)."""

    def __init__(self, run_dir: Path, resume_step: int | None = None, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_after(resume_step)
        self._fh = open(self.path, "a")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def _truncate_after(self, step: int | None) -> None:
        """Drop records past `step` (written after the checkpoint a resumed run restarts from)."""
        if not self.path.exists():
            return
        records = read_metrics(self.path)
        keep = [r for r in records if step is not None and r["step"] <= step]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self._tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def plot_curves(metrics_path: Path, png_path: Path) -> Path:
    """A grid of the training curves in `metrics_path`, saved as a PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    keys = [k for k in CURVES if any(r.get(k) is not None for r in records)]
    cols = 4
    rows = max(1, math.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        points = [(r["tokens"], r[key]) for r in records if r.get(key) is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points])
        ax.set_title(key)
        ax.set_xlabel("tokens")
        if key in ("mse", "fvu", "loss") and all(p[1] > 0 for p in points):
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.subplots_adjust(hspace=0.45, wspace=0.3)
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return png_path
