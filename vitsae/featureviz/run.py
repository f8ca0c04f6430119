"""`vitsae visualize` as a function: build the objective, optimise every target in batches, write the files.

Output folder:
- `featureviz.json`: format `vitsae.featureviz`, version 1 (docs/featureviz.md): the settings, the model and
  SAE provenance, and per target its image files, the objective curve, the value reached on the final image,
  and, with a reference source, the target's maximum over those real images and the ratio of the two;
- `featureviz.safetensors`: the same images (N, S, 3, H, W), curves and attribution maps as tensors;
- `images/<target>_<index>_<sample>.png` (and `..._attribution.png` for MACO), `grid.png`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from vitsae.config import config_to_dict
from vitsae.data.loader import ImageLoader
from vitsae.data.open import open_source
from vitsae.data.sources import ImageSource
from vitsae.errors import VitsaeError
from vitsae.featureviz.augment import Augment
from vitsae.featureviz.config import VisualizeConfig
from vitsae.featureviz.objectives import (
    ClassLogit,
    Direction,
    DistributionMatch,
    Neuron,
    Objective,
    SAEFeature,
    Site,
    TokenObjective,
)
from vitsae.featureviz.optimize import Penalties, evaluate, layouts_for, optimize
from vitsae.featureviz.params import FourierImage, ImageParam, ImageStatistics, MacoImage, PixelImage
from vitsae.fileio import atomic_path, save_tensors_atomic, write_json_atomic
from vitsae.sae import SparseAutoencoder

FORMAT = "vitsae.featureviz"
FORMAT_VERSION = 1
RECORD_FILE = "featureviz.json"
TENSORS_FILE = "featureviz.safetensors"
CURVE_POINTS = 64  # objective curve points kept per image in the JSON


class VisualizeError(VitsaeError):
    """A visualisation request that does not fit the model, SAE or images."""


@dataclass(frozen=True)
class Reference:
    """Each target's values on real images: the maximum, where it is reached, and the mean."""

    max_N: torch.Tensor
    argmax_N: torch.Tensor
    mean_N: torch.Tensor
    keys: list[str]


def _open(spec: str, what: str) -> ImageSource:
    try:
        return open_source(spec)
    except (ValueError, FileNotFoundError) as err:
        raise VisualizeError(f"{what} {spec!r}: {err}") from err


def reference_values(
    model, objective: Objective, source: ImageSource, n_images: int, batch_size: int
) -> Reference:
    """Every target's value on up to `n_images` images of `source` (real activations, not surrogates)."""
    loader = ImageLoader(source, model.preprocess, batch_size=batch_size, stop=min(n_images, len(source)))
    best = torch.full((objective.n_targets,), -math.inf)
    where = torch.zeros(objective.n_targets, dtype=torch.long)
    total = torch.zeros(objective.n_targets, dtype=torch.float64)
    count = 0
    layouts = layouts_for(model, objective.hooks())
    with torch.no_grad():
        for batch in loader:
            acts = model.collect(batch.pixels_BCHW, list(objective.hooks()))
            values_BN = objective.values(acts, layouts).float()
            top, arg = values_BN.max(0)
            better = top > best
            best = torch.where(better, top, best)
            where = torch.where(better, batch.indices_B[arg], where)
            total += values_BN.double().sum(0)
            count += values_BN.shape[0]
    if count == 0:
        raise VisualizeError("the reference source gave no readable image")
    keys = [source[int(i)].key for i in where]
    return Reference(best, where, (total / count).float(), keys)


def _distribution_reference(
    model, base: TokenObjective, source: ImageSource, reference: Reference
) -> torch.Tensor:
    """Per target, the descending sorted patch values (surrogate units) of its top reference image."""
    pixels = torch.stack([model.preprocess(source[int(i)].image.convert("RGB")) for i in reference.argmax_N])
    layouts = layouts_for(model, base.hooks())
    layout = layouts[base.site.hook]
    with torch.no_grad():
        per_token_BTN = base.token_values(model.collect(pixels, list(base.hooks())), surrogate=True)
    patches_BPN = per_token_BTN if layout.grid_hw is None else per_token_BTN[:, layout.n_prefix :]
    own_NP = patches_BPN[torch.arange(base.n_targets), :, torch.arange(base.n_targets)]
    return own_NP.sort(dim=-1, descending=True).values


def _parse_targets(text: str, names: list[str] | None) -> tuple[list[int] | None, int | None]:
    """'1,5,9' or 'name,name' -> indices; 'top:N' -> (None, N)."""
    if text.startswith("top:"):
        try:
            count = int(text[4:])
        except ValueError:
            count = 0
        if count < 1:
            raise VisualizeError(f"--features {text!r}: top:N needs a positive N")
        return None, count
    indices = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        if item.lstrip("-").isdigit():
            indices.append(int(item))
        elif names and item in names:
            indices.append(names.index(item))
        else:
            valid = f"; valid names: {', '.join(names)}" if names else " (no class names known: give indices)"
            raise VisualizeError(f"--features: {item!r} is neither an index nor a known name{valid}")
    if not indices:
        raise VisualizeError("--features names no target")
    return indices, None


def _all_targets(cfg: VisualizeConfig, model, sae: SparseAutoencoder | None, site: Site) -> Objective:
    """The objective over every candidate target (the whole dictionary, every unit or every class)."""
    if cfg.target == "feature":
        return SAEFeature(site, sae, tuple(range(sae.cfg.d_sae)))
    if cfg.target == "decoder":
        return Direction(site, sae.W_dec.detach(), cosine=True)
    if cfg.target == "neuron":
        return Neuron(site, tuple(range(model.token_layout(site.hook).width)))
    return ClassLogit(tuple(range(model.token_layout("hook_logits").width)))


def _site(cfg: VisualizeConfig, model, sae: SparseAutoencoder | None) -> Site:
    hook = cfg.hook or (sae.cfg.hook_name if sae is not None else "")
    if cfg.target == "class":
        hook = "hook_logits"
    if not hook:
        raise VisualizeError(f"target {cfg.target!r} needs --hook (valid: {', '.join(model.hook_names())})")
    if sae is not None and cfg.hook and sae.cfg.hook_name and cfg.hook != sae.cfg.hook_name:
        raise VisualizeError(f"--hook {cfg.hook} differs from the SAE's hook {sae.cfg.hook_name}")
    try:
        model.check_hook_names([hook])
    except ValueError as err:
        raise VisualizeError(
            f"the model has no hook {hook!r} (is the SAE from another model?): {err}"
        ) from err
    return Site(hook, cfg.reduce, cfg.patch)


def _param(
    cfg: VisualizeConfig, batch: int, size: tuple[int, int], stats: ImageStatistics, gen
) -> ImageParam:
    if cfg.method == "pixel":
        return PixelImage(batch, size, gen)
    if cfg.method == "maco":
        return MacoImage(batch, size, stats, gen)
    return FourierImage(batch, size, stats, gen)


def _save_png(path: Path, image_3HW: torch.Tensor) -> str:
    array = (image_3HW.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path.name


def _save_attribution(path: Path, image_3HW: torch.Tensor, map_HW: torch.Tensor) -> str:
    """The image faded where the objective does not come from (MACO's transparency view)."""
    alpha = map_HW.clamp(0, 1)[None]
    return _save_png(path, image_3HW * alpha + 0.5 * (1 - alpha))


def _save_grid(path: Path, images_NS3HW: torch.Tensor) -> None:
    n, s, _, h, w = images_NS3HW.shape
    columns = max(1, min(8, math.ceil(math.sqrt(n * s))))
    rows = math.ceil(n * s / columns)
    grid = torch.ones(3, rows * (h + 2), columns * (w + 2))
    for i, image in enumerate(images_NS3HW.reshape(n * s, 3, h, w)):
        r, c = divmod(i, columns)
        grid[:, r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = image
    _save_png(path, grid)


def visualize_targets(cfg: VisualizeConfig, model, sae: SparseAutoencoder | None = None) -> dict[str, Any]:
    """Run `cfg` on a loaded model (and SAE); write the output folder and return the JSON record."""
    torch.manual_seed(cfg.seed)
    site = _site(cfg, model, sae)
    candidates = _all_targets(cfg, model, sae, site)
    reference_source = _open(cfg.reference_source, "--reference-source") if cfg.reference_source else None
    class_names = reference_source.describe().get("classes") if reference_source is not None else None
    indices, top = _parse_targets(cfg.features, class_names if cfg.target == "class" else None)
    reference = None
    if reference_source is not None:
        reference = reference_values(
            model, candidates, reference_source, cfg.reference_images, cfg.batch_size
        )
    if top is not None:
        if reference is None:
            raise VisualizeError("--features top:N ranks targets on real images: give --reference-source")
        indices = reference.mean_N.argsort(descending=True)[:top].tolist()
    bad = [i for i in indices if not 0 <= i < candidates.n_targets]
    if bad:
        raise VisualizeError(f"--features: {bad} out of range; valid: 0..{candidates.n_targets - 1}")
    objective = candidates.select(indices)
    if cfg.method == "vital":
        objective = DistributionMatch(
            objective,
            _distribution_reference(model, objective, reference_source, _subset(reference, indices)),
        )
    size = (cfg.image_size, cfg.image_size) if cfg.image_size else tuple(model.preprocess.size)
    stats = _image_statistics(cfg, size, reference_source)
    images, curves, attributions = _optimise_all(cfg, model, objective, size, stats, site)
    final_NS = _final_values(model, objective if cfg.method != "vital" else objective.base, images)
    return _write(
        cfg,
        model,
        sae,
        site,
        indices,
        class_names,
        images,
        curves,
        attributions,
        final_NS,
        None if reference is None else _subset(reference, indices),
        stats,
    )


def _subset(reference: Reference, indices: list[int]) -> Reference:
    keep = torch.tensor(indices)
    return Reference(
        reference.max_N[keep],
        reference.argmax_N[keep],
        reference.mean_N[keep],
        [reference.keys[i] for i in indices],
    )


def _image_statistics(cfg: VisualizeConfig, size: tuple[int, int], reference_source) -> ImageStatistics:
    if cfg.method == "pixel":
        return ImageStatistics.power_law(*size)
    if cfg.spectrum_source:
        source = _open(cfg.spectrum_source, "--spectrum-source")
        return ImageStatistics.from_source(source, size, cfg.spectrum_images, name=cfg.spectrum_source)
    if reference_source is not None:
        return ImageStatistics.from_source(
            reference_source, size, cfg.spectrum_images, name=cfg.reference_source
        )
    return ImageStatistics.power_law(*size)


def _optimise_all(cfg, model, objective: Objective, size, stats, site):
    """Every target x sample, `batch_size` images at a time; returns (N, S, 3, H, W), curves, attributions."""
    n, s = objective.n_targets, cfg.samples
    assignment = [t for t in range(n) for _ in range(s)]
    per_batch = max(s, (cfg.batch_size // s) * s)  # whole groups of samples per batch
    generator = torch.Generator().manual_seed(cfg.seed)
    augment = Augment(cfg.pad, cfg.jitter, cfg.scale, cfg.rotate, cfg.noise)
    tv, l2 = (cfg.tv, cfg.l2) if cfg.method == "pixel" else (0.0, 0.0)
    penalties = Penalties(tv, l2, cfg.diversity if s > 1 else 0.0, site.hook)
    images, curves, attributions = [], [], []
    bar = tqdm(total=len(assignment) * cfg.steps, unit="img-step", disable=not cfg.progress, desc="visualize")
    for start in range(0, len(assignment), per_batch):
        chunk = assignment[start : start + per_batch]
        targets = sorted(set(chunk))
        local = [targets.index(t) for t in chunk]
        param = _param(cfg, len(chunk), size, stats, generator)
        result = optimize(
            model,
            objective.select(targets),
            local,
            param,
            cfg.steps,
            cfg.lr,
            augment,
            generator,
            penalties,
            group_size=s,
            on_step=lambda _, n=len(chunk): bar.update(n),  # noqa: B008
        )
        images.append(result.images_B3HW)
        curves.append(result.curve_SB)
        if result.attribution_BHW is not None:
            attributions.append(result.attribution_BHW)
    bar.close()
    images_NS3HW = torch.cat(images).reshape(n, s, 3, *size)
    curves_NSS = torch.cat(curves, dim=1).T.reshape(n, s, cfg.steps)
    attribution = torch.cat(attributions).reshape(n, s, *size) if attributions else None
    return images_NS3HW, curves_NSS, attribution


def _final_values(model, objective: Objective, images_NS3HW: torch.Tensor) -> torch.Tensor:
    """The real value each final image reaches on its own target, without augmentation: (N, S)."""
    n, s = images_NS3HW.shape[:2]
    values = evaluate(model, objective, images_NS3HW.reshape(n * s, *images_NS3HW.shape[2:]))
    return values[torch.arange(n * s), torch.arange(n).repeat_interleave(s)].reshape(n, s)


def _write(
    cfg, model, sae, site, indices, class_names, images, curves, attributions, final_NS, reference, stats
):
    out = Path(cfg.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    prefix = {"feature": "feature", "decoder": "decoder", "neuron": "unit", "class": "class"}[cfg.target]
    step_index = np.unique(np.linspace(0, cfg.steps - 1, min(cfg.steps, CURVE_POINTS)).round().astype(int))
    targets = []
    for t, index in enumerate(indices):
        entry: dict[str, Any] = {
            "index": index,
            "name": _name(cfg, index, class_names),
            "images": [],
            "attributions": [],
            "objective": final_NS[t].tolist(),
            "curve_steps": step_index.tolist(),
            "curves": curves[t][:, step_index].tolist(),
        }
        for sample in range(cfg.samples):
            stem = f"{prefix}_{index:06d}_{sample}"
            entry["images"].append(_save_png(out / "images" / f"{stem}.png", images[t, sample]))
            if attributions is not None:
                entry["attributions"].append(
                    _save_attribution(
                        out / "images" / f"{stem}_attribution.png", images[t, sample], attributions[t, sample]
                    )
                )
        if reference is not None:
            top = float(reference.max_N[t])
            entry["reference"] = {
                "max": top,
                "mean": float(reference.mean_N[t]),
                "image_key": reference.keys[t],
            }
            entry["ratio"] = [v / top if top > 0 else None for v in entry["objective"]]
        targets.append(entry)
    _save_grid(out / "grid.png", images)
    tensors = {
        "images_NS3HW": images.half().contiguous(),
        "curves_NSS": curves.float().contiguous(),
        "indices_N": torch.tensor(indices),
    }
    if attributions is not None:
        tensors["attributions_NSHW"] = attributions.half().contiguous()
    save_tensors_atomic(out / TENSORS_FILE, tensors)
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config_to_dict(cfg),
        "model": {"spec": cfg.model, "weights_hash": model.weights_hash()},
        "sae": None
        if sae is None
        else {"path": str(cfg.sae), "hook": sae.cfg.hook_name, "d_sae": sae.cfg.d_sae},
        "site": {"hook": site.hook, "reduce": site.reduce, "patch": list(site.patch_rc)},
        "image_size": list(images.shape[-2:]),
        "spectrum": stats.source,
        "targets": targets,
    }
    write_json_atomic(out / RECORD_FILE, record)
    return record


def _name(cfg: VisualizeConfig, index: int, class_names) -> str:
    if cfg.target == "class" and class_names and index < len(class_names):
        return str(class_names[index])
    return str(index)
