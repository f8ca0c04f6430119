"""`vitsae attribute`: heatmaps of one target by several methods over an image source.

Writes into `--out`: `heatmaps.safetensors` (one float32 (N, H, W) tensor per method at the model's input
resolution, plus `indices` and `classes`), `attribution.json` (format `vitsae.attribution` version 1: the
configs, target, model, source, images and per-method timings; see docs/attribution.md), `grid.png`
(images x methods) and `overlays/<method>/<key>.png` for the first `--n-overlays` images.
"""

from __future__ import annotations

import argparse
import time

import torch
from tqdm.auto import tqdm

from vitsae.attribution.config import AttributeConfig, MethodConfig
from vitsae.attribution.methods import attribute
from vitsae.attribution.overlay import save_grid, save_overlay
from vitsae.attribution.run import Setup, batches, display_images, open_setup, to_cpu_float
from vitsae.config import add_config_arguments, config_from_args, config_to_dict
from vitsae.fileio import save_tensors_atomic, write_json_atomic

FORMAT = "vitsae.attribution"
VERSION = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, AttributeConfig)
    add_config_arguments(parser, MethodConfig)


def compute_heatmaps(setup: Setup, cfg: AttributeConfig, method_cfg: MethodConfig) -> dict:
    """Every method's heatmaps over the setup's images, with the per-method seconds and IG errors."""
    maps: dict[str, list[torch.Tensor]] = {name: [] for name in cfg.methods}
    seconds = dict.fromkeys(cfg.methods, 0.0)
    deltas: list[torch.Tensor] = []
    gaps: list[torch.Tensor] = []
    indices, labels, classes = [], [], []
    bar = tqdm(total=setup.stop - setup.start, unit="img", desc="attribute", disable=not cfg.progress)
    for batch in batches(setup, cfg.batch_size):
        classes_B = setup.fn.classes_for(batch.pixels_BCHW, batch.labels_B)
        for name in cfg.methods:
            began = time.perf_counter()
            result = attribute(setup.fn, name, batch.pixels_BCHW, classes_B, method_cfg)
            seconds[name] += time.perf_counter() - began
            maps[name].append(to_cpu_float(result.maps_BHW))
            if result.delta_B is not None:
                deltas.append(to_cpu_float(result.delta_B))
                gaps.append(to_cpu_float(result.maps_BHW.sum(dim=(1, 2)) - result.delta_B))
        indices.append(batch.indices_B)
        labels.append(batch.labels_B)
        classes.append(classes_B)
        bar.update(len(batch.indices_B))
    bar.close()
    n_images = int(sum(len(i) for i in indices))
    timings = {
        name: {
            "seconds": round(seconds[name], 3),
            "images_per_s": round(n_images / max(seconds[name], 1e-9), 2),
        }
        for name in cfg.methods
    }
    if deltas:
        delta, gap = torch.cat(deltas), torch.cat(gaps)
        timings["ig"]["completeness"] = {
            "mean_abs_error": round(float(delta.abs().mean()), 5),
            "mean_abs_relative_error": round(float((delta.abs() / gap.abs().clamp_min(1e-6)).mean()), 5),
        }
    return {
        "maps": {name: torch.cat(parts) for name, parts in maps.items()},
        "indices": torch.cat(indices),
        "labels": torch.cat(labels),
        "classes": torch.cat(classes),
        "timings": timings,
    }


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(AttributeConfig, args)
    method_cfg = config_from_args(MethodConfig, args)
    setup = open_setup(
        cfg.model, cfg.source, cfg.target, cfg.sae, cfg.start, cfg.n_images, cfg.device, cfg.allow_other_model
    )
    result = compute_heatmaps(setup, cfg, method_cfg)
    write_outputs(setup, cfg, method_cfg, result)
    pictures = " and grid.png" if cfg.n_overlays else ""
    print(f"wrote {cfg.out}/attribution.json, heatmaps.safetensors{pictures}")
    for name, timing in result["timings"].items():
        extra = timing.get("completeness")
        note = f", completeness error {extra['mean_abs_relative_error']:.3f} (relative)" if extra else ""
        print(f"  {name}: {timing['images_per_s']:.2f} images/s{note}")
    return 0


def write_outputs(setup: Setup, cfg: AttributeConfig, method_cfg: MethodConfig, result: dict) -> None:
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    indices = [int(i) for i in result["indices"]]
    keys = [setup.source.key(i) if hasattr(setup.source, "key") else str(i) for i in indices]
    names = setup.class_names
    shown = list(range(min(cfg.n_overlays, len(indices))))
    if shown:
        images = display_images(setup, [indices[i] for i in shown])
        classes = [int(result["classes"][i]) for i in shown]
        titles = [
            f"{i}: {names[c] if names and setup.fn.target.is_class else keys[i]}"
            for i, c in zip(shown, classes, strict=True)
        ]
        shown_maps = {name: maps[shown].numpy() for name, maps in result["maps"].items()}
        save_grid(out / "grid.png", images, shown_maps, titles, title=f"{cfg.model}  target {cfg.target}")
        for name, maps in shown_maps.items():
            folder = out / "overlays" / name.replace(":", "-")
            folder.mkdir(parents=True, exist_ok=True)
            for row, i in enumerate(shown):
                save_overlay(folder / f"{keys[i]}.png", images[row], maps[row])
    tensors = {f"map/{name}": maps for name, maps in result["maps"].items()}
    tensors.update(indices=result["indices"], classes=result["classes"])
    save_tensors_atomic(out / "heatmaps.safetensors", tensors)
    write_json_atomic(
        out / "attribution.json",
        {
            "format": FORMAT,
            "version": VERSION,
            "config": config_to_dict(cfg),
            "method_config": config_to_dict(method_cfg),
            "target": setup.fn.target.describe(),
            "target_hook": setup.fn.hook,
            "model_weights_hash": setup.model.weights_hash(),
            "source": setup.source.describe(),
            "image_hw": list(setup.fn.image_hw),
            "images": [
                {"index": i, "key": k, "label": int(lab), "class": int(c)}
                for i, k, lab, c in zip(indices, keys, result["labels"], result["classes"], strict=True)
            ],
            "methods": result["timings"],
            "files": {
                "heatmaps": "heatmaps.safetensors",
                "grid": "grid.png" if shown else None,
                "overlays": "overlays/<method>/<key>.png" if shown else None,
            },
        },
    )
