"""Network Dissection of SAE features: every feature scored against every concept mask in one pass.

Bau et al. (2017), adapted to sparse features. For each unit u (an SAE feature, a raw neuron or channel of
the hook, or a unit of a randomly rotated basis of it) and image, the per-patch activation map is brought
to the mask resolution (bilinear or nearest upsampling, or the masks are pooled to the patch grid
instead), thresholded at the unit's threshold T_u, and compared with each concept's mask. Over the whole
dataset

    IoU(u, c) = sum_i |M_u,i & L_c,i| / sum_i |M_u,i | L_c,i|

from three tallies: intersections [U, C], the unit's area [U], the concept's area [C] (the union is
area_u + area_c - intersection). Image-level tallies (images where u is on, where c is present, both) give
detection precision and recall beside the pixel (segmentation) ones.

Thresholds. NetDissect's T_u is the top-0.5% quantile of all of u's activations, which is 0 for a sparse
feature firing on fewer than 0.5% of patches. Here T_u is the `quantile` of u's *nonzero* activations
(measured on a first pass over `threshold_images` images, or read from a `vitsae stats` histogram), and
each unit's firing rate and coverage (fraction of pixels above T_u) are recorded. The dense baselines
default to `baseline_quantile` = 0.995, which for a dense unit is NetDissect's own rule.

Memory. The tallies are kept per block of images (`bootstrap_blocks` contiguous blocks): O(G·U·C) however
many images. The confidence interval of a unit's IoU resamples the blocks with replacement (a block is
one image when there are at most G images); images are independent, so blocks are too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm import tqdm

from vitsae.analysis.pixel_blocks import PixelBlocks
from vitsae.config import config_from_dict, config_to_dict
from vitsae.data.concepts import ConceptMaskError, ConceptSource
from vitsae.data.loader import ImageLoader
from vitsae.errors import VitsaeError
from vitsae.fileio import check_format, read_json, save_tensors_atomic, write_json_atomic
from vitsae.sae.model import SparseAutoencoder

DISSECTION_FORMAT = "vitsae.dissection"
DISSECTION_FORMAT_VERSION = 1
DISSECTION_JSON = "dissection.json"
DISSECTION_TENSORS = "dissection.safetensors"
RESOLUTIONS = ("bilinear", "nearest", "grid")


class DissectionError(VitsaeError):
    """Inputs that cannot be dissected together (an SAE for another hook, a hook with no patch grid, ...)."""


@dataclass(frozen=True)
class DissectConfig:
    """How units are thresholded and compared with the masks, and how the result is summarised."""

    resolution: Literal["bilinear", "nearest", "grid"] = field(
        default="bilinear",
        metadata={"help": "upsample maps to the masks (bilinear or nearest), or pool masks to the grid"},
    )
    quantile: float = field(
        default=0.5, metadata={"help": "SAE threshold: this quantile of a feature's nonzero activations"}
    )
    baseline_quantile: float = field(
        default=0.995,
        metadata={"help": "neuron/rotated threshold: this quantile of a unit's nonzero activations"},
    )
    threshold_images: int = field(
        default=2000, metadata={"help": "images of the first (threshold) pass, from the start of the source"}
    )
    n_bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples of the IoU interval"})
    bootstrap_blocks: int = field(default=64, metadata={"help": "image blocks the bootstrap resamples"})
    confidence: float = field(default=0.95, metadata={"help": "confidence level of the IoU interval"})
    iou_levels: tuple[float, ...] = field(
        default=(0.04, 0.2, 0.5), metadata={"help": "IoU levels the summary counts concepts and units at"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the rotated basis and the bootstrap"})

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise DissectionError(f"unknown resolution {self.resolution!r}; valid: {list(RESOLUTIONS)}")
        for name in ("quantile", "baseline_quantile"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise DissectionError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 < self.confidence < 1.0:
            raise DissectionError(f"confidence must be in (0, 1), got {self.confidence}")
        for name in ("threshold_images", "n_bootstrap", "bootstrap_blocks"):
            if getattr(self, name) < 1:
                raise DissectionError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.iou_levels or not all(0.0 < level <= 1.0 for level in self.iou_levels):
            raise DissectionError(f"iou_levels must lie in (0, 1], got {list(self.iou_levels)}")


# --- units ---------------------------------------------------------------------------------------


class Basis:
    """A set of units read off a hook's patch activations [B, P, D]: per image, the active units' maps."""

    name: str
    n_units: int
    sparse: bool

    def prepare(self, acts_BPD: torch.Tensor) -> Any:
        raise NotImplementedError

    def image_maps(self, prepared: Any, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(units_a, maps_aP) of image b: the units with any nonzero patch and their patch values."""
        raise NotImplementedError


class SAEBasis(Basis):
    """The features of an SAE (sparse codes of every patch token)."""

    sparse = True

    def __init__(self, sae: SparseAutoencoder, name: str = "sae") -> None:
        self.sae, self.name, self.n_units = sae, name, sae.cfg.d_sae

    @torch.no_grad()
    def prepare(self, acts_BPD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_images, n_patches, width = acts_BPD.shape
        device = next(self.sae.parameters()).device
        codes = self.sae.encode_sparse(acts_BPD.reshape(-1, width).to(device).float())
        shape = (n_images, n_patches, -1)
        return codes.indices_BK.cpu().reshape(shape), codes.values_BK.float().cpu().reshape(shape)

    def image_maps(self, prepared: Any, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        indices_PK, values_PK = prepared[0][b], prepared[1][b]
        patch_PK = torch.arange(indices_PK.shape[0])[:, None].expand_as(indices_PK)
        firing = values_PK > 0
        units_a, slot_E = torch.unique(indices_PK[firing].long(), return_inverse=True)
        maps_aP = torch.zeros(units_a.numel(), indices_PK.shape[0])
        maps_aP.index_put_((slot_E, patch_PK[firing]), values_PK[firing], accumulate=True)
        return units_a, maps_aP


class DenseBasis(Basis):
    """The hook's own units (neurons or channels), or those of an orthogonal rotation `rotation_DD`."""

    sparse = False

    def __init__(self, width: int, name: str, rotation_DD: torch.Tensor | None = None) -> None:
        self.name, self.n_units, self.rotation_DD = name, width, rotation_DD

    def prepare(self, acts_BPD: torch.Tensor) -> torch.Tensor:
        acts_BPD = acts_BPD.float().cpu()
        return acts_BPD if self.rotation_DD is None else acts_BPD @ self.rotation_DD

    def image_maps(self, prepared: Any, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.arange(self.n_units), prepared[b].T.contiguous()


def random_rotation(width: int, seed: int) -> torch.Tensor:
    """A Haar-random orthogonal [D, D] matrix (QR of a Gaussian with the signs of R's diagonal fixed)."""
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(width, width, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return (q * torch.sign(torch.diagonal(r))[None, :]).float()


# --- thresholds ----------------------------------------------------------------------------------


def quantile_of_nonzero(
    units_E: torch.Tensor, values_E: torch.Tensor, n_units: int, q: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per unit, the q-quantile (linear interpolation, as numpy's default) of its nonzero values.

    Returns (thresholds [U] float32, +inf for a unit with no nonzero value; nonzero counts [U] int64).
    """
    keep = values_E != 0
    units_E, values_E = units_E[keep].long(), values_E[keep].double()
    order = np.lexsort((values_E.numpy(), units_E.numpy()))
    units_E, values_E = units_E[order], values_E[order]
    counts_U = torch.bincount(units_E, minlength=n_units)
    starts_U = torch.cumsum(counts_U, 0) - counts_U
    position_U = q * (counts_U - 1).clamp(min=0).double()
    low_U = position_U.floor().long()
    high_U = torch.minimum(low_U + 1, (counts_U - 1).clamp(min=0))
    thresholds_U = torch.full((n_units,), math.inf, dtype=torch.float64)
    seen = counts_U > 0
    lo = values_E[(starts_U + low_U)[seen]]
    hi = values_E[(starts_U + high_U)[seen]]
    frac = (position_U - low_U.double())[seen]
    thresholds_U[seen] = lo + (hi - lo) * frac
    return thresholds_U.float(), counts_U


def quantile_from_histogram(
    hist_UH: torch.Tensor, edges: torch.Tensor, max_U: torch.Tensor, q: float
) -> torch.Tensor:
    """Per unit, the q-quantile of its nonzero activations from a `vitsae stats` histogram.

    Bins are log-spaced with an open first bin (0, edges[1]) and open last bin [edges[-2], max); inside a
    bin the quantile is interpolated geometrically (linearly in the first bin). +inf for an empty row.
    """
    hist_UH = hist_UH.double()
    n_U = hist_UH.sum(1)
    target_U = q * n_U
    cum_UH = torch.cumsum(hist_UH, 1)
    bin_U = (
        torch.searchsorted(cum_UH, target_U[:, None], right=False).squeeze(1).clamp(max=hist_UH.shape[1] - 1)
    )
    before_U = torch.gather(cum_UH, 1, bin_U[:, None]).squeeze(1) - torch.gather(
        hist_UH, 1, bin_U[:, None]
    ).squeeze(1)
    inside_U = torch.gather(hist_UH, 1, bin_U[:, None]).squeeze(1)
    frac_U = ((target_U - before_U) / inside_U.clamp(min=1)).clamp(0, 1)
    edges = edges.double()
    lower_U = edges[bin_U]
    upper_U = edges[bin_U + 1]
    last = bin_U == hist_UH.shape[1] - 1
    upper_U = torch.where(last, torch.maximum(max_U.double(), lower_U), upper_U)
    first = bin_U == 0
    geometric = lower_U * (upper_U / lower_U.clamp(min=1e-30)) ** frac_U
    linear = upper_U * frac_U
    out = torch.where(first, linear, geometric)
    return torch.where(n_U > 0, out, torch.full_like(out, math.inf)).float()


def thresholds_from_stats(stats: Any, q: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(threshold, nonzero count -1 = "from a histogram", firing rate) of each feature of `FeatureStats`."""
    thresholds_F = quantile_from_histogram(stats.hist_FH, stats.hist_edges, stats.max_act_F, q)
    return thresholds_F, torch.full_like(stats.fire_count_F, -1), stats.frequency_F().float()


# --- geometry ------------------------------------------------------------------------------------


def maps_to_masks(maps_aGG: torch.Tensor, size_hw: tuple[int, int], resolution: str) -> torch.Tensor:
    """Per-patch maps [a, gh, gw] at mask resolution [a, H, W] (pixel centres aligned, as PIL's resize)."""
    if resolution == "grid" or tuple(maps_aGG.shape[-2:]) == tuple(size_hw):
        return maps_aGG
    if maps_aGG.shape[0] == 0:
        return maps_aGG.new_zeros((0, *size_hw))
    mode = "bilinear" if resolution == "bilinear" else "nearest"
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(maps_aGG[None], size=size_hw, mode=mode, **kwargs)[0]


def masks_to_grid(masks_CHW: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Masks pooled to the patch grid: a patch is in a concept when at least half its pixels are."""
    pooled = F.adaptive_avg_pool2d(masks_CHW.float()[None], grid_hw)[0]
    return pooled >= 0.5


def masks_in_model_frame(masks: dict[str, np.ndarray], preprocess: Any) -> dict[str, np.ndarray]:
    """Masks cropped like the model's input when its preprocessing crops (a plain resize keeps the frame)."""
    if preprocess is None or getattr(preprocess, "resize_shortest_edge", None) is None:
        return masks
    from PIL import Image

    nearest = replace(preprocess, resample="nearest")
    return {
        name: np.asarray(nearest.resize_crop(Image.fromarray(mask.astype(np.uint8) * 255))) > 127
        for name, mask in masks.items()
    }


# --- tallies -------------------------------------------------------------------------------------


class ConceptTally:
    """Bounded-memory counts of one basis against the concepts, per block of images."""

    def __init__(self, n_units: int, n_concepts: int, n_blocks: int) -> None:
        self.inter_GUC = torch.zeros((n_blocks, n_units, n_concepts), dtype=torch.int64)
        self.area_GU = torch.zeros((n_blocks, n_units), dtype=torch.int64)
        self.fired_U = torch.zeros(n_units, dtype=torch.int64)
        self.both_UC = torch.zeros((n_units, n_concepts), dtype=torch.int64)

    def add(
        self,
        block: int,
        units_a: torch.Tensor,
        area_a: torch.Tensor,
        inter_ac: torch.Tensor,
        concepts_c: torch.Tensor,
    ) -> None:
        """One image: units `units_a` with their on-pixel counts and overlaps with the present concepts."""
        if units_a.numel() == 0:
            return
        self.area_GU[block].index_add_(0, units_a, area_a)
        fired = area_a > 0
        self.fired_U[units_a[fired]] += 1
        if concepts_c.numel() == 0:
            return
        self.inter_GUC[block].index_put_((units_a[:, None], concepts_c[None, :]), inter_ac, accumulate=True)
        self.both_UC.index_put_(
            (units_a[fired][:, None], concepts_c[None, :]),
            torch.ones((int(fired.sum()), concepts_c.numel()), dtype=torch.int64),
            accumulate=True,
        )


def iou_from_tallies(inter_UC: torch.Tensor, area_U: torch.Tensor, area_C: torch.Tensor) -> torch.Tensor:
    """IoU [U, C] = inter / (area_u + area_c - inter), 0 where the union is empty."""
    inter = inter_UC.double()
    union = area_U.double()[:, None] + area_C.double()[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def bootstrap_iou_interval(
    inter_GU: torch.Tensor,
    area_GU: torch.Tensor,
    concept_area_GU: torch.Tensor,
    n_resamples: int,
    confidence: float,
    seed: int,
) -> torch.Tensor:
    """[U, 2] percentile interval of IoU(u, c_u) with the blocks resampled (inputs: one concept per unit)."""
    n_blocks = inter_GU.shape[0]
    rng = np.random.default_rng(seed)
    counts_RG = torch.from_numpy(
        rng.multinomial(n_blocks, np.full(n_blocks, 1.0 / n_blocks), size=n_resamples)
    )
    counts_RG = counts_RG.double()
    inter_RU = counts_RG @ inter_GU.double()
    union_RU = counts_RG @ (area_GU.double() + concept_area_GU.double()) - inter_RU
    iou_RU = torch.where(union_RU > 0, inter_RU / union_RU.clamp(min=1), torch.zeros_like(inter_RU))
    alpha = (1.0 - confidence) / 2
    levels = torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64)
    return torch.quantile(iou_RU, levels, dim=0).T.float()


# --- results -------------------------------------------------------------------------------------


@dataclass
class BasisResult:
    """One basis's dissection: tallies, thresholds and the per-unit / per-concept summaries."""

    name: str
    quantile: float
    threshold_U: torch.Tensor
    nonzero_U: torch.Tensor  # nonzero activations seen when the threshold was set (-1: from stats)
    inter_UC: torch.Tensor
    area_U: torch.Tensor
    fired_U: torch.Tensor
    both_UC: torch.Tensor
    ci_U2: torch.Tensor  # interval of the best concept's IoU
    runner_ci_U2: torch.Tensor  # interval of the runner-up's IoU
    fire_rate_U: torch.Tensor  # fraction of patch tokens with a nonzero activation (threshold pass)

    def iou_UC(self, area_C: torch.Tensor) -> torch.Tensor:
        return iou_from_tallies(self.inter_UC, self.area_U, area_C)


@dataclass
class Dissection:
    """The result of `dissect`: per basis, every unit against every concept."""

    config: DissectConfig
    concepts: tuple[str, ...]
    n_images: int
    n_pixels: int  # compared pixels over all images
    area_C: torch.Tensor
    present_C: torch.Tensor  # images in which each concept is present
    bases: dict[str, BasisResult]
    meta: dict[str, Any] = field(default_factory=dict)

    def iou(self, basis: str = "sae") -> torch.Tensor:
        return self.bases[basis].iou_UC(self.area_C)

    def summary(self, basis: str) -> dict[str, Any]:
        """Concepts with a unit at each IoU level, and units whose best IoU reaches each level."""
        iou_UC = self.iou(basis)
        best_C = iou_UC.max(0).values if iou_UC.numel() else torch.zeros(len(self.concepts))
        best_U = iou_UC.max(1).values if iou_UC.numel() else torch.zeros(0)
        present = self.present_C > 0
        return {
            "concepts_present": int(present.sum()),
            "concepts_at_iou": {
                str(level): int((best_C[present] >= level).sum()) for level in self.config.iou_levels
            },
            "units_at_iou": {str(level): int((best_U >= level).sum()) for level in self.config.iou_levels},
            "units": int(iou_UC.shape[0]),
            "median_best_iou": float(best_U.median()) if best_U.numel() else 0.0,
        }

    def unit_records(self, basis: str) -> list[dict[str, Any]]:
        result = self.bases[basis]
        iou_UC = self.iou(basis)
        n_concepts = len(self.concepts)
        top = torch.topk(iou_UC, min(2, n_concepts), dim=1)
        inter = result.inter_UC.double()
        records = []
        for u in range(iou_UC.shape[0]):
            c = int(top.indices[u, 0])
            record = {
                "unit": u,
                "threshold": _finite(float(result.threshold_U[u])),
                "fire_rate": float(result.fire_rate_U[u]),
                "coverage": float(result.area_U[u]) / max(self.n_pixels, 1),
                "concept": self.concepts[c],
                "iou": float(top.values[u, 0]),
                "ci": [float(v) for v in result.ci_U2[u]],
                "pixel_precision": float(inter[u, c] / max(int(result.area_U[u]), 1)),
                "pixel_recall": float(inter[u, c] / max(int(self.area_C[c]), 1)),
                "detection_precision": float(result.both_UC[u, c]) / max(int(result.fired_U[u]), 1),
                "detection_recall": float(result.both_UC[u, c]) / max(int(self.present_C[c]), 1),
            }
            if n_concepts > 1:
                r = int(top.indices[u, 1])
                record.update(
                    runner_up=self.concepts[r],
                    runner_up_iou=float(top.values[u, 1]),
                    runner_up_ci=[float(v) for v in result.runner_ci_U2[u]],
                )
            records.append(record)
        return records

    def concept_records(self, basis: str) -> list[dict[str, Any]]:
        iou_UC = self.iou(basis)
        best = iou_UC.max(0)
        return [
            {
                "concept": concept,
                "images": int(self.present_C[c]),
                "pixel_fraction": float(self.area_C[c]) / max(self.n_pixels, 1),
                "unit": int(best.indices[c]),
                "iou": float(best.values[c]),
            }
            for c, concept in enumerate(self.concepts)
        ]

    def save(self, out_dir: str | Path) -> Path:
        """Write `dissection.safetensors` (full tallies and IoU matrices) and `dissection.json`."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tensors = {"area_C": self.area_C, "present_C": self.present_C}
        for name, result in self.bases.items():
            for key in _BASIS_TENSORS:
                tensors[f"{name}.{key}"] = getattr(result, key).contiguous()
            tensors[f"{name}.iou_UC"] = self.iou(name).float().contiguous()
        save_tensors_atomic(out_dir / DISSECTION_TENSORS, tensors)
        write_json_atomic(
            out_dir / DISSECTION_JSON,
            {
                "format": DISSECTION_FORMAT,
                "format_version": DISSECTION_FORMAT_VERSION,
                "config": config_to_dict(self.config),
                "concepts": list(self.concepts),
                "n_images": self.n_images,
                "n_pixels": self.n_pixels,
                "meta": self.meta,
                "bases": {
                    name: {
                        "quantile": result.quantile,
                        "summary": self.summary(name),
                        "concepts": self.concept_records(name),
                        "units": self.unit_records(name),
                    }
                    for name, result in self.bases.items()
                },
            },
        )
        return out_dir

    @classmethod
    def load(cls, out_dir: str | Path) -> Dissection:
        out_dir = Path(out_dir)
        path = out_dir / DISSECTION_JSON
        if not path.is_file():
            raise DissectionError(f"no {DISSECTION_JSON} in {out_dir}: run vitsae dissect first")
        info = check_format(
            path, read_json(path), DISSECTION_FORMAT, DISSECTION_FORMAT_VERSION, DissectionError
        )
        tensors = load_file(str(out_dir / DISSECTION_TENSORS))
        bases = {}
        for name, entry in info["bases"].items():
            missing = [f"{name}.{key}" for key in _BASIS_TENSORS if f"{name}.{key}" not in tensors]
            if missing:
                raise DissectionError(
                    f"{out_dir / DISSECTION_TENSORS} lacks tensors {missing}: rerun vitsae dissect"
                )
            bases[name] = BasisResult(
                name=name,
                quantile=entry["quantile"],
                **{key: tensors[f"{name}.{key}"] for key in _BASIS_TENSORS},
            )
        return cls(
            config=config_from_dict(DissectConfig, info["config"]),
            concepts=tuple(info["concepts"]),
            n_images=info["n_images"],
            n_pixels=info["n_pixels"],
            area_C=tensors["area_C"],
            present_C=tensors["present_C"],
            bases=bases,
            meta=info["meta"],
        )


_BASIS_TENSORS = (
    "threshold_U",
    "nonzero_U",
    "inter_UC",
    "area_U",
    "fired_U",
    "both_UC",
    "ci_U2",
    "runner_ci_U2",
    "fire_rate_U",
)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


# --- the pass ------------------------------------------------------------------------------------

ImageCallback = Callable[[str, int, torch.Tensor, torch.Tensor], None]


def _patch_acts(model: Any, hook: str, pixels_BCHW: torch.Tensor, n_prefix: int) -> torch.Tensor:
    with torch.no_grad():
        acts_BTD = model.collect(pixels_BCHW, [hook])[hook]
    return acts_BTD[:, n_prefix:, :]


def check_sae_for_hook(sae: SparseAutoencoder, hook: str, width: int, sae_name: str = "the SAE") -> None:
    """One-line errors for an SAE of another hook or width."""
    if sae.cfg.hook_name and sae.cfg.hook_name != hook:
        raise DissectionError(
            f"{sae_name} was trained on hook {sae.cfg.hook_name!r}, not {hook!r}; pass an SAE of {hook!r}"
        )
    if sae.cfg.d_in != width:
        raise DissectionError(f"{sae_name} reads width d_in={sae.cfg.d_in}; hook {hook!r} has width {width}")


@dataclass
class Run:
    """One model with the bases read off it and their thresholds' quantiles."""

    model: Any
    bases: list[Basis]
    quantiles: dict[str, float]


def _batches(
    source: ConceptSource, preprocess: Any, batch_size: int, stop: int, progress: bool, desc: str
) -> Iterable[Any]:
    loader = ImageLoader(source, preprocess, batch_size=batch_size, stop=stop)
    yield from tqdm(loader, disable=not progress, desc=desc, unit="batch")


def estimate_thresholds(
    runs: list[Run],
    hook: str,
    source: ConceptSource,
    n_prefix: int,
    n_images: int,
    *,
    batch_size: int,
    device: str,
    progress: bool,
) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """First pass: per basis (thresholds [U], nonzero counts [U], firing rate [U])."""
    pairs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {b.name: [] for r in runs for b in r.bases}
    n_tokens = 0
    preprocess = runs[0].model.preprocess
    for batch in _batches(source, preprocess, batch_size, min(n_images, len(source)), progress, "thresholds"):
        pixels = batch.pixels_BCHW.to(device)
        for run in runs:
            acts_BPD = _patch_acts(run.model, hook, pixels, n_prefix)
            for basis in run.bases:
                prepared = basis.prepare(acts_BPD)
                if basis.sparse:
                    indices, values = prepared
                    firing = values > 0
                    pairs[basis.name].append((indices[firing], values[firing]))
                else:
                    flat = prepared.reshape(-1, basis.n_units)
                    units = torch.arange(basis.n_units).expand_as(flat)
                    pairs[basis.name].append((units.reshape(-1), flat.reshape(-1)))
        n_tokens += batch.pixels_BCHW.shape[0] * acts_BPD.shape[1]
    out = {}
    for run in runs:
        for basis in run.bases:
            units = (
                torch.cat([p[0] for p in pairs[basis.name]])
                if pairs[basis.name]
                else torch.zeros(0, dtype=torch.long)
            )
            values = torch.cat([p[1] for p in pairs[basis.name]]) if pairs[basis.name] else torch.zeros(0)
            thresholds, counts = quantile_of_nonzero(units, values, basis.n_units, run.quantiles[basis.name])
            out[basis.name] = (thresholds, counts, counts.double() / max(n_tokens, 1))
    return out


def dissect(
    runs: list[Run],
    hook: str,
    source: ConceptSource,
    config: DissectConfig | None = None,
    *,
    thresholds: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None,  # by basis name
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
    on_image: ImageCallback | None = None,
    meta: dict[str, Any] | None = None,
) -> Dissection:
    """Dissect every basis of every run over every image of `source`.

    `thresholds[name]` = (threshold [U], nonzero count [U], firing rate [U]) where known
    (`thresholds_from_stats`); the others are measured by a first pass over the first
    `config.threshold_images` images.

    `on_image(basis, image, units_a, maps_aP)` sees each image's active units and their patch maps, so other
    per-image measures (the report card's spatial coherence) share the pass.
    """
    config = config or DissectConfig()
    if not hasattr(source, "masks") or not hasattr(source, "concepts"):
        raise ConceptMaskError(f"the image source {source.describe().get('kind')!r} has no concept masks")
    model0 = runs[0].model
    layout = model0.token_layout(hook)
    if layout.grid_hw is None:
        raise DissectionError(
            f"hook {hook!r} has no patch grid (a pooled output): there is no map to compare"
        )
    grid_hw, n_prefix = layout.grid_hw, layout.n_prefix
    concepts = tuple(source.concepts)
    concept_index = {name: c for c, name in enumerate(concepts)}
    n_images = len(source)
    if n_images == 0:
        raise ConceptMaskError("the concept source holds no images")
    n_blocks = min(config.bootstrap_blocks, n_images)
    bases = [basis for run in runs for basis in run.bases]
    names = [basis.name for basis in bases]
    if len(set(names)) != len(names):
        raise DissectionError(f"basis names repeat: {names}")
    thresholds = dict(thresholds or {})
    missing = [
        Run(run.model, [b for b in run.bases if b.name not in thresholds], run.quantiles)
        for run in runs
        if any(b.name not in thresholds for b in run.bases)
    ]
    if missing:
        measured = estimate_thresholds(
            missing,
            hook,
            source,
            n_prefix,
            config.threshold_images,
            batch_size=batch_size,
            device=device,
            progress=progress,
        )
        thresholds.update(measured)
    tallies = {b.name: ConceptTally(b.n_units, len(concepts), n_blocks) for b in bases}
    area_GC = torch.zeros((n_blocks, len(concepts)), dtype=torch.int64)
    present_C = torch.zeros(len(concepts), dtype=torch.int64)
    n_pixels, seen = 0, 0
    pixel_blocks: dict[tuple[int, int], PixelBlocks] = {}
    preprocess = model0.preprocess
    for batch in _batches(source, preprocess, batch_size, n_images, progress, "dissect"):
        pixels = batch.pixels_BCHW.to(device)
        prepared = {}
        for run in runs:
            acts_BPD = _patch_acts(run.model, hook, pixels, n_prefix)
            for basis in run.bases:
                prepared[basis.name] = basis.prepare(acts_BPD)
        for b, index in enumerate(batch.indices_B.tolist()):
            masks = masks_in_model_frame(source.masks(index), preprocess)
            shapes = {mask.shape for mask in masks.values()}
            if len(shapes) > 1:
                raise ConceptMaskError(
                    f"the masks of image {index} ({source.key(index)}) differ in size: {sorted(shapes)}"
                )
            unknown = sorted(set(masks) - set(concept_index))
            if unknown:
                raise ConceptMaskError(
                    f"image {index} ({source.key(index)}) has masks for {unknown}, which are not among the "
                    f"source's concepts {list(concepts)}"
                )
            size_hw = shapes.pop() if shapes else tuple(int(s) for s in preprocess.size)
            present = [name for name in masks if masks[name].any()]
            concepts_c = torch.tensor([concept_index[name] for name in present], dtype=torch.long)
            masks_cHW = (
                torch.from_numpy(np.stack([masks[name] for name in present]))
                if present
                else torch.zeros((0, *size_hw), dtype=torch.bool)
            )
            if config.resolution == "grid":
                masks_cHW = masks_to_grid(masks_cHW, grid_hw)
                size_hw = grid_hw
            masks_cN = masks_cHW.reshape(len(present), -1)
            if size_hw not in pixel_blocks:
                mode = "nearest" if config.resolution == "grid" else config.resolution
                pixel_blocks[size_hw] = PixelBlocks.build(grid_hw, size_hw, mode)
            blocks = pixel_blocks[size_hw]
            mask_words_GcW = blocks.mask_words(masks_cN)
            block = seen * n_blocks // n_images
            area_GC[block].index_add_(0, concepts_c, masks_cN.sum(1).long())
            present_C[concepts_c] += 1
            n_pixels += size_hw[0] * size_hw[1]
            seen += 1
            for basis in bases:
                units_a, maps_aP = basis.image_maps(prepared[basis.name], b)
                if on_image is not None:
                    on_image(basis.name, index, units_a, maps_aP)
                area_a, inter_ac = blocks.count(maps_aP, thresholds[basis.name][0][units_a], mask_words_GcW)
                tallies[basis.name].add(block, units_a, area_a, inter_ac, concepts_c)
    area_C = area_GC.sum(0)
    results = {}
    for run in runs:
        for basis in run.bases:
            tally = tallies[basis.name]
            inter_UC = tally.inter_GUC.sum(0)
            area_U = tally.area_GU.sum(0)
            iou_UC = iou_from_tallies(inter_UC, area_U, area_C)
            top = torch.topk(iou_UC, min(2, len(concepts)), dim=1).indices
            intervals = []
            for rank in range(2):
                c_U = top[:, min(rank, top.shape[1] - 1)]
                intervals.append(
                    bootstrap_iou_interval(
                        torch.gather(tally.inter_GUC, 2, c_U[None, :, None].expand(n_blocks, -1, 1)).squeeze(
                            2
                        ),
                        tally.area_GU,
                        area_GC[:, c_U],
                        config.n_bootstrap,
                        config.confidence,
                        config.seed,
                    )
                )
            threshold_U, nonzero_U, fire_rate_U = thresholds[basis.name]
            results[basis.name] = BasisResult(
                name=basis.name,
                quantile=run.quantiles[basis.name],
                threshold_U=threshold_U.float(),
                nonzero_U=nonzero_U.long(),
                inter_UC=inter_UC,
                area_U=area_U,
                fired_U=tally.fired_U,
                both_UC=tally.both_UC,
                ci_U2=intervals[0],
                runner_ci_U2=intervals[1],
                fire_rate_U=fire_rate_U.float(),
            )
    return Dissection(config, concepts, seen, n_pixels, area_C, present_C, results, dict(meta or {}))
