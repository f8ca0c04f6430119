"""An SAE report card: how interpretable a whole dictionary is, each measure beside a random dictionary.

One pass over images with concept masks (the dissection pass, `dissection.dissect`) measures, for each
SAE and for a random SAE of the same size and k (encoder and decoder redrawn; the trained SAE's input
scale and decoder bias kept, so only the directions are random):

- spatial coherence: Moran's I of a feature's patch map on the 8-connected grid, averaged over the images
  where the feature fires on between 5% and 90% of the patches, then over features;
- sparse probing: for each image task true on 5-95% of the probe images ("the image contains a red
  object"; on the shapes dataset also "the large object is a star"), a logistic probe on the best 1, 5
  and 20 features (ranked by a Welch t statistic on the first half of the probe images) scored by AUC on
  the second half; the same probe on all raw activations;
- concept coverage: concepts with a feature at each IoU level, features labelled at each level;
- dead (never fire), dense (fire on > 10% of patches) and duplicate (decoder cosine > 0.9 with another)
  features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vitsae.errors import VitsaeError
from vitsae.sae.model import SparseAutoencoder

REPORT_CARD_FORMAT = "vitsae.report_card"
REPORT_CARD_FORMAT_VERSION = 1
REPORT_CARD_JSON = "report_card.json"


@dataclass(frozen=True)
class ReportCardConfig:
    """The report card's measures and their cut-offs."""

    connectivity: int = field(
        default=8, metadata={"help": "Moran's I neighbourhood on the patch grid: 4 or 8"}
    )
    coherence_min: float = field(
        default=0.05, metadata={"help": "Moran's I: least fraction of patches firing"}
    )
    coherence_max: float = field(
        default=0.9, metadata={"help": "Moran's I: largest fraction of patches firing"}
    )
    probe_images: int = field(default=2000, metadata={"help": "images whose pooled codes the probes use"})
    probe_ks: tuple[int, ...] = field(default=(1, 5, 20), metadata={"help": "features per sparse probe"})
    probe_min_fraction: float = field(
        default=0.05,
        metadata={"help": "probe a concept present in at least this fraction of images (and 1 - it)"},
    )
    dense_frequency: float = field(
        default=0.1, metadata={"help": "a feature firing on more patches is dense"}
    )
    duplicate_cosine: float = field(default=0.9, metadata={"help": "decoder cosine that makes a duplicate"})
    random_seed: int = field(default=0, metadata={"help": "seed of the random SAE baseline"})

    def __post_init__(self) -> None:
        if self.connectivity not in (4, 8):
            raise VitsaeError(f"connectivity must be 4 or 8, got {self.connectivity}")
        if not 0.0 <= self.coherence_min < self.coherence_max <= 1.0:
            raise VitsaeError(
                "need 0 <= coherence_min < coherence_max <= 1, "
                f"got {self.coherence_min}, {self.coherence_max}"
            )
        if self.probe_images < 4 or not self.probe_ks or min(self.probe_ks) < 1:
            raise VitsaeError(
                f"probe_images must be >= 4 and probe_ks >= 1, got {self.probe_images}, {self.probe_ks}"
            )


def morans_i(maps_aHW: torch.Tensor, connectivity: int = 8) -> torch.Tensor:
    """Moran's I of each map [a, H, W], binary weights on the 4- or 8-connected grid; NaN for a constant map.

    I = (N / W) * sum_ij w_ij z_i z_j / sum_i z_i^2 with z = x - mean(x), W = sum_ij w_ij.
    """
    x = maps_aHW.double()
    z = x - x.mean(dim=(1, 2), keepdim=True)
    height, width = x.shape[1:]
    offsets = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if connectivity == 8 else [])
    num = torch.zeros(x.shape[0], dtype=torch.float64)
    total_weight = 0
    for dy, dx in offsets:
        a = z[:, : height - dy, max(0, -dx) : width - max(0, dx)]
        b = z[:, dy:, max(0, dx) : width + min(0, dx)]
        num += 2 * (a * b).sum(dim=(1, 2))
        total_weight += 2 * a.shape[1] * a.shape[2]
    denom = (z * z).sum(dim=(1, 2))
    n = height * width
    return torch.where(
        denom > 0, (n / total_weight) * num / denom.clamp(min=1e-300), torch.full_like(num, float("nan"))
    )


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def fit_logistic(
    x_NK: np.ndarray, y_N: np.ndarray, l2: float = 1e-3, steps: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """L2-regularised logistic regression on standardised columns by Newton's method (IRLS).

    Minimises mean log-loss + l2 * |w|^2 (bias unpenalised); returns (column means, weights then bias) in
    the original units. Newton converges in a few steps on the few features a sparse probe uses.
    """
    x = np.asarray(x_NK, dtype=np.float64)
    y = np.asarray(y_N, dtype=np.float64)
    mean, std = x.mean(0), x.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    xs = np.concatenate([(x - mean) / std, np.ones((len(x), 1))], axis=1)
    penalty = np.full(xs.shape[1], 2 * l2)
    penalty[-1] = 0.0
    w = np.zeros(xs.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(xs @ w, -30, 30)))
        grad = xs.T @ (p - y) / len(y) + penalty * w
        hess = (xs * (p * (1 - p))[:, None]).T @ xs / len(y) + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return mean, np.concatenate([w[:-1] / std, w[-1:]])


def probe_auc(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    mean, weights = fit_logistic(x_train, y_train)
    return auc((x_test - mean) @ weights[:-1], y_test)


def welch_t(x_NU: np.ndarray, y_N: np.ndarray) -> np.ndarray:
    """Welch's t statistic of each column between the positive and negative images (0 where undefined)."""
    pos, neg = x_NU[y_N], x_NU[~y_N]
    if len(pos) < 2 or len(neg) < 2:
        return np.zeros(x_NU.shape[1])
    var = pos.var(0, ddof=1) / len(pos) + neg.var(0, ddof=1) / len(neg)
    diff = pos.mean(0) - neg.mean(0)
    return np.where(var > 0, diff / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)


LARGE = "size:large"


def probe_tasks(concepts: list[str]) -> list[tuple[str, str | None]]:
    """Image-level tasks (name, concept or None). "c": the image contains c anywhere. With a `size:large`
    concept (the shapes dataset) also "large:c" for each shape, colour, texture c: the large object is c."""
    tasks: list[tuple[str, str | None]] = [(c, None) for c in concepts]
    if LARGE in concepts:
        families = ("shape:", "colour:", "texture:")
        tasks += [(f"large:{c}", c) for c in concepts if c.startswith(families)]
    return tasks


def image_task_labels(masks: dict[str, np.ndarray], tasks: list[tuple[str, str | None]]) -> np.ndarray:
    """One image's label for every task of `probe_tasks`."""
    large = masks.get(LARGE)
    labels = []
    for name, concept in tasks:
        if concept is None:
            labels.append(bool(name in masks and masks[name].any()))
        else:
            labels.append(bool(large is not None and concept in masks and (masks[concept] & large).any()))
    return np.asarray(labels, dtype=bool)


def sparse_probing(
    features_NU: np.ndarray, labels_NC: np.ndarray, ks: tuple[int, ...], min_fraction: float
) -> dict[str, Any]:
    """Per probed concept and k, the held-out AUC of a probe on the k best features (first half: train)."""
    n = features_NU.shape[0]
    half = n // 2
    results: dict[str, dict[str, float]] = {}
    for c in range(labels_NC.shape[1]):
        y = labels_NC[:, c]
        fraction = y.mean()
        if not min_fraction <= fraction <= 1.0 - min_fraction or y[:half].all() or not y[:half].any():
            continue
        if y[half:].all() or not y[half:].any():
            continue
        t = np.abs(welch_t(features_NU[:half], y[:half]))
        ranked = np.argsort(-t, kind="mergesort")
        results[str(c)] = {
            str(k): probe_auc(
                features_NU[:half, ranked[:k]], y[:half], features_NU[half:, ranked[:k]], y[half:]
            )
            for k in ks
        }
    return results


def dictionary_health(
    sae: SparseAutoencoder, fire_count_U: torch.Tensor, n_patches: int, cfg: ReportCardConfig
) -> dict[str, int]:
    """Dead, dense and duplicate features of an SAE (firing counted over the report card's patches)."""
    rate = fire_count_U.double() / max(n_patches, 1)
    w = sae.W_dec.detach().double()
    w = w / w.norm(dim=1, keepdim=True).clamp(min=1e-12)
    cos = w @ w.T
    cos.fill_diagonal_(-1.0)
    return {
        "dead": int((fire_count_U == 0).sum()),
        "dense": int((rate > cfg.dense_frequency).sum()),
        "duplicates": int((cos.max(1).values > cfg.duplicate_cosine).sum()),
    }


def random_sae_like(sae: SparseAutoencoder, seed: int) -> SparseAutoencoder:
    """A freshly initialised SAE of the same config with the trained one's decoder bias (same input scale)."""
    generator = torch.Generator().manual_seed(seed)
    random = SparseAutoencoder(sae.cfg, generator=generator)
    with torch.no_grad():
        random.b_dec.copy_(sae.b_dec.detach().cpu())
    return random.to(next(sae.parameters()).device).eval()


class CardCollector:
    """Per-image hook of the dissection pass: Moran's I, firing counts and pooled codes for the probes."""

    def __init__(self, n_units: dict[str, int], grid_hw: tuple[int, int], cfg: ReportCardConfig) -> None:
        self.cfg, self.grid_hw = cfg, grid_hw
        self.moran_sum = {name: torch.zeros(u, dtype=torch.float64) for name, u in n_units.items()}
        self.moran_count = {name: torch.zeros(u, dtype=torch.int64) for name, u in n_units.items()}
        self.fire_count = {name: torch.zeros(u, dtype=torch.int64) for name, u in n_units.items()}
        self.pooled: dict[str, dict[int, np.ndarray]] = {name: {} for name in n_units}
        self.n_units = n_units
        self.patches: dict[str, int] = dict.fromkeys(n_units, 0)

    def __call__(self, basis: str, image: int, units_a: torch.Tensor, maps_aP: torch.Tensor) -> None:
        if basis not in self.n_units:
            return
        n_patches = maps_aP.shape[1] if maps_aP.ndim == 2 else self.grid_hw[0] * self.grid_hw[1]
        self.patches[basis] += n_patches
        firing = (maps_aP > 0).sum(1)
        self.fire_count[basis].index_add_(0, units_a, firing.long())
        fraction = firing.double() / n_patches
        scored = (fraction >= self.cfg.coherence_min) & (fraction <= self.cfg.coherence_max)
        if scored.any():
            values = morans_i(maps_aP[scored].reshape(-1, *self.grid_hw), self.cfg.connectivity)
            finite = torch.isfinite(values)
            units = units_a[scored][finite]
            self.moran_sum[basis].index_add_(0, units, values[finite])
            self.moran_count[basis].index_add_(0, units, torch.ones_like(units))
        if len(self.pooled[basis]) < self.cfg.probe_images:
            row = np.zeros(self.n_units[basis], dtype=np.float32)
            if maps_aP.shape[0]:
                row[units_a.numpy()] = maps_aP.max(1).values.numpy()
            self.pooled[basis][image] = row

    def coherence(self, basis: str) -> dict[str, float]:
        count = self.moran_count[basis]
        scored = count > 0
        per_unit = self.moran_sum[basis][scored] / count[scored]
        return {
            "mean_morans_i": float(per_unit.mean()) if scored.any() else float("nan"),
            "features_scored": int(scored.sum()),
        }


class RawPooler:
    """Mean-pooled raw activations of the probe images (the probing baseline), from the same pass."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.rows: dict[int, np.ndarray] = {}

    def __call__(self, basis: str, image: int, units_a: torch.Tensor, maps_aP: torch.Tensor) -> None:
        if basis == "neurons" and len(self.rows) < self.limit:
            self.rows[image] = maps_aP.mean(1).numpy()


def _mean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def report_card(
    saes: dict[str, SparseAutoencoder],
    model: Any,
    hook: str,
    source: Any,
    dissect_config: Any,
    config: ReportCardConfig | None = None,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
    meta: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], Any]:
    """The report card of every SAE in `saes` (one pass for all), and the dissection it was read from."""
    from .dissection import DenseBasis, Run, SAEBasis, dissect

    config = config or ReportCardConfig()
    layout = model.token_layout(hook)
    if layout.grid_hw is None:
        raise VitsaeError(f"hook {hook!r} has no patch grid (a pooled output): no maps to score")
    bases, quantiles = [], {}
    for name, sae in saes.items():
        bases += [SAEBasis(sae, name), SAEBasis(random_sae_like(sae, config.random_seed), f"{name}/random")]
        quantiles[name] = quantiles[f"{name}/random"] = dissect_config.quantile
    bases.append(DenseBasis(layout.width, "neurons"))
    quantiles["neurons"] = dissect_config.baseline_quantile
    collector = CardCollector({b.name: b.n_units for b in bases if b.sparse}, layout.grid_hw, config)
    raw = RawPooler(config.probe_images)

    def on_image(basis: str, image: int, units_a: torch.Tensor, maps_aP: torch.Tensor) -> None:
        collector(basis, image, units_a, maps_aP)
        raw(basis, image, units_a, maps_aP)

    result = dissect(
        [Run(model, bases, quantiles)],
        hook,
        source,
        dissect_config,
        batch_size=batch_size,
        device=device,
        progress=progress,
        on_image=on_image,
        meta=meta,
    )
    images = sorted(raw.rows)
    tasks = probe_tasks(list(result.concepts))
    labels_NC = np.stack([image_task_labels(source.masks(image), tasks) for image in images])
    raw_NU = np.stack([raw.rows[i] for i in images])
    half = len(images) // 2
    raw_auc: dict[str, float] = {}
    for c in range(len(tasks)):
        y = labels_NC[:, c]
        if (
            config.probe_min_fraction <= y.mean() <= 1 - config.probe_min_fraction
            and 0 < y[:half].sum() < half
        ):
            if 0 < y[half:].sum() < len(y) - half:
                raw_auc[str(c)] = probe_auc(raw_NU[:half], y[:half], raw_NU[half:], y[half:])

    def scores(name: str, sae: SparseAutoencoder) -> dict[str, Any]:
        pooled = np.stack([collector.pooled[name][i] for i in images])
        probes = sparse_probing(pooled, labels_NC, config.probe_ks, config.probe_min_fraction)
        return {
            "spatial_coherence": collector.coherence(name),
            "probing_auc": {str(k): _mean([p[str(k)] for p in probes.values()]) for k in config.probe_ks},
            "probing_auc_per_task": {tasks[int(c)][0]: p for c, p in probes.items()},
            "coverage": result.summary(name),
            "health": dictionary_health(sae, collector.fire_count[name], collector.patches[name], config),
        }

    random_by_name = {b.name: b.sae for b in bases if b.sparse}
    card = {
        "format": REPORT_CARD_FORMAT,
        "format_version": REPORT_CARD_FORMAT_VERSION,
        "n_images": result.n_images,
        "probe_images": len(images),
        "tasks_probed": [tasks[int(c)][0] for c in raw_auc],
        "raw_probe_auc": _mean(list(raw_auc.values())),
        "raw_probe_auc_per_task": {tasks[int(c)][0]: v for c, v in raw_auc.items()},
        "saes": {
            name: {
                "trained": scores(name, sae),
                "random": scores(f"{name}/random", random_by_name[f"{name}/random"]),
            }
            for name, sae in saes.items()
        },
        "meta": dict(meta or {}),
    }
    return card, result


def format_card(card: dict[str, Any], iou_levels: tuple[float, ...]) -> str:
    """One row per SAE: each measure as trained / random."""
    ks = list(next(iter(card["saes"].values()))["trained"]["probing_auc"])
    levels = [str(level) for level in iou_levels]
    head = ["sae", "moran I"] + [f"AUC@{k}" for k in ks] + [f"c@{lv}" for lv in levels]
    head += [f"u@{levels[0]}", "dead", "dense", "dup"]
    rows = [head]
    for name, entry in card["saes"].items():

        def pair(get: Any, fmt: str = "{:.3f}", entry: dict[str, Any] = entry) -> str:
            return f"{fmt.format(get(entry['trained']))}/{fmt.format(get(entry['random']))}"

        row = [name, pair(lambda e: e["spatial_coherence"]["mean_morans_i"])]
        row += [pair(lambda e, k=k: e["probing_auc"][k]) for k in ks]
        row += [pair(lambda e, lv=lv: e["coverage"]["concepts_at_iou"][lv], "{}") for lv in levels]
        row += [pair(lambda e: e["coverage"]["units_at_iou"][levels[0]], "{}")]
        row += [pair(lambda e, key=key: e["health"][key], "{}") for key in ("dead", "dense", "duplicates")]
        rows.append(row)
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            str(cell).rjust(w) if i else str(cell).ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    concepts = card["tasks_probed"]
    lines.append(
        "each cell: trained / random SAE of the same size and k. AUC: held-out sparse probes over "
        f"{len(concepts)} image tasks; raw activations (all units): {card['raw_probe_auc']:.3f}. "
        "c@x: concepts with a feature at IoU >= x; u@x: features labelled at IoU >= x; "
        "dup: decoder cosine > duplicate_cosine"
    )
    return "\n".join(lines)
