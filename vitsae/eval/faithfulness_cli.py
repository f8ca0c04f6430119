"""`vitsae faithfulness`: one table of attribution methods x faithfulness metrics, with a random-heatmap row.

Takes every flag of `vitsae attribute` (model, source, target, methods, method options) and those of
`FaithfulnessConfig`. Writes into `--out`: `faithfulness.json` (format `vitsae.faithfulness` version 1: the
configs, the table of means with standard errors, the mean curves and the randomisation check per layer;
see docs/attribution.md), `faithfulness.safetensors` (every per-image value, `<method>/<metric>`),
`table.md`, `curves.png`, `randomisation.png` and the attribution `grid.png`.
"""

from __future__ import annotations

import argparse
import io
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from vitsae.attribution.config import AttributeConfig, ConfigError, MethodConfig, check_method
from vitsae.attribution.methods import attribute
from vitsae.attribution.overlay import save_grid
from vitsae.attribution.run import Setup, batches, display_images, open_setup, to_cpu_float
from vitsae.attribution.substrates import SUBSTRATES, Substrate, substrate
from vitsae.attribution.targets import Target, TargetFunction
from vitsae.config import add_config_arguments, config_from_args, config_to_dict
from vitsae.data.shapes import ShapesDataset
from vitsae.errors import VitsaeError
from vitsae.eval import faithfulness as fm
from vitsae.fileio import save_tensors_atomic, write_bytes_atomic, write_json_atomic

FORMAT = "vitsae.faithfulness"
VERSION = 1
RANDOM = "random"  # the baseline row: a uniform random heatmap per image
GROUND_TRUTH_CONCEPT = (
    "size:large"  # the shapes image's one large object, whose shape and colour set the class
)


@dataclass(frozen=True)
class FaithfulnessConfig:
    """Which faithfulness metrics to compute, and how finely."""

    substrates: tuple[Substrate, ...] = field(
        default=SUBSTRATES,
        metadata={"help": f"pixel substrates of the curves, from: {', '.join(SUBSTRATES)}"},
    )
    steps: int = field(default=16, metadata={"help": "steps of each deletion/insertion curve"})
    curves: bool = field(default=True, metadata={"help": "compute deletion/insertion curves and AOPC"})
    patch_level: bool = field(
        default=True, metadata={"help": "also patch-level curves (token dropping) for a HookedViT"}
    )
    curve_target: str = field(
        default="", metadata={"help": "score the curves with this target instead (e.g. prob:label)"}
    )
    randomisation_images: int = field(
        default=8, metadata={"help": "images of the cascading model-randomisation check (0: skip it)"}
    )
    randomisation_methods: tuple[str, ...] = field(
        default=("saliency", "gradxinput", "ig", "gradcam"),
        metadata={"help": "methods put through the randomisation check"},
    )
    score_batch_size: int = field(default=128, metadata={"help": "perturbed images scored per forward"})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.substrates) - set(SUBSTRATES))
        if unknown:
            raise ConfigError(f"unknown substrates {unknown}; valid: {', '.join(SUBSTRATES)}")
        for name in self.randomisation_methods:
            check_method(name)
        if self.steps < 1 or self.score_batch_size < 1 or self.randomisation_images < 0:
            raise ConfigError(
                f"need steps >= 1, score_batch_size >= 1, randomisation_images >= 0; got {self.steps}, "
                f"{self.score_batch_size}, {self.randomisation_images}"
            )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, AttributeConfig)
    add_config_arguments(parser, MethodConfig)
    add_config_arguments(parser, FaithfulnessConfig)


def columns(setup: Setup, cfg: FaithfulnessConfig) -> dict[str, str]:
    """Metric name -> which way is better, in table order."""
    out: dict[str, str] = {}
    if cfg.curves:
        for name in cfg.substrates:
            out.update({f"deletion_auc[{name}]": "lower", f"insertion_auc[{name}]": "higher"})
            out[f"aopc[{name}]"] = "higher"
        if cfg.patch_level and _patch_level(setup):
            out.update(
                {"deletion_auc[patch]": "lower", "insertion_auc[patch]": "higher", "aopc[patch]": "higher"}
            )
    if isinstance(setup.source, ShapesDataset) and setup.fn.target.is_class:
        out.update({"pointing_game": "higher", "mass_inside": "higher"})
    return out


def _patch_level(setup: Setup) -> bool:
    try:
        fm.check_patch_level(setup.model, setup.fn.hook, setup.fn.target.patch is not None)
    except VitsaeError:
        return False
    return True


def ground_truth_masks(setup: Setup, indices: list[int]) -> torch.Tensor:
    """The large object's visible pixels at the model's input size, bool (B, H, W)."""
    from PIL import Image

    masks = []
    for i in indices:
        mask = setup.source.sample(i).masks[GROUND_TRUTH_CONCEPT]
        image = Image.fromarray(mask.astype(np.uint8) * 255).convert("RGB")
        masks.append(np.asarray(setup.model.preprocess.resize_crop(image))[..., 0] > 127)
    return torch.from_numpy(np.stack(masks))


def evaluate(setup: Setup, cfg: AttributeConfig, method_cfg: MethodConfig, faith: FaithfulnessConfig) -> dict:
    """The table, mean curves and per-image values of every method and the random baseline."""
    curve_fn = setup.fn
    if faith.curve_target:
        curve_fn = TargetFunction(
            setup.model, Target.parse(faith.curve_target, setup.class_names), setup.fn.sae
        )
    wanted = columns(setup, faith)
    rows = [*cfg.methods, RANDOM]
    values: dict[str, dict[str, list[torch.Tensor]]] = {m: {c: [] for c in wanted} for m in rows}
    curves: dict[str, dict[str, list[torch.Tensor]]] = {m: {} for m in rows}
    seconds = dict.fromkeys(rows, 0.0)
    shown: dict[str, list[torch.Tensor]] = {m: [] for m in rows}
    patch_fractions: list[float] = []
    generator = torch.Generator().manual_seed(method_cfg.seed)
    bar = tqdm(total=setup.stop - setup.start, unit="img", desc="faithfulness", disable=not cfg.progress)
    for batch in batches(setup, cfg.batch_size):
        pixels, indices = batch.pixels_BCHW, [int(i) for i in batch.indices_B]
        classes_B = setup.fn.classes_for(pixels, batch.labels_B)
        curve_classes_B = curve_fn.classes_for(pixels, batch.labels_B)
        masks = ground_truth_masks(setup, indices) if "pointing_game" in wanted else None
        fills = {
            name: substrate(name, pixels, setup.model.preprocess, generator) for name in faith.substrates
        }
        for method in rows:
            began = time.perf_counter()
            if method == RANDOM:
                maps = torch.rand(pixels.shape[0], *pixels.shape[-2:], generator=generator)
            else:
                maps = to_cpu_float(attribute(setup.fn, method, pixels, classes_B, method_cfg).maps_BHW)
            seconds[method] += time.perf_counter() - began
            if sum(len(s) for s in shown[method]) < cfg.n_overlays:
                shown[method].append(maps)
            if faith.curves:
                for name, fill in fills.items():
                    deletion, insertion = fm.pixel_curves(
                        curve_fn, pixels, curve_classes_B, maps, fill, faith.steps, faith.score_batch_size
                    )
                    _add_curves(values[method], curves[method], name, deletion.cpu(), insertion.cpu(), None)
                if "aopc[patch]" in wanted:
                    deletion, insertion, patch_fractions = fm.patch_curves(
                        curve_fn,
                        setup.model,
                        pixels,
                        curve_classes_B,
                        maps,
                        faith.steps,
                        faith.score_batch_size,
                    )
                    _add_curves(
                        values[method],
                        curves[method],
                        "patch",
                        deletion.cpu(),
                        insertion.cpu(),
                        patch_fractions,
                    )
            if masks is not None:
                values[method]["pointing_game"].append(fm.pointing_game(maps, masks))
                values[method]["mass_inside"].append(fm.mass_inside(maps, masks))
        bar.update(len(indices))
    bar.close()
    table, sem, per_image_values = {}, {}, {}
    for method in rows:
        table[method], sem[method] = {}, {}
        for column in wanted:
            per_image = torch.cat(values[method][column]).double()
            per_image_values[f"{method}/{column}"] = per_image.float()
            table[method][column] = float(per_image.mean())
            sem[method][column] = (
                float(per_image.std() / max(1, len(per_image)) ** 0.5) if len(per_image) > 1 else 0.0
            )
        table[method]["seconds_per_image"] = seconds[method] / (setup.stop - setup.start)
    mean_curves = {
        method: {key: torch.cat(parts).mean(dim=0).tolist() for key, parts in per.items()}
        for method, per in curves.items()
    }
    return {
        "rows": rows,
        "column_order": list(wanted),  # JSON objects are written with sorted keys
        "columns": wanted,
        "table": table,
        "standard_error": sem,
        "curves": mean_curves,
        "patch_fractions": patch_fractions,
        "shown": {m: torch.cat(parts)[: cfg.n_overlays] for m, parts in shown.items() if parts},
        "per_image": per_image_values,
    }


def _add_curves(values, curves, name, deletion, insertion, fractions) -> None:
    values[f"deletion_auc[{name}]"].append(fm.auc(deletion, fractions))
    insertion_fractions = None if fractions is None else [1 - f for f in reversed(fractions)]
    values[f"insertion_auc[{name}]"].append(fm.auc(insertion, insertion_fractions))
    values[f"aopc[{name}]"].append(fm.aopc(deletion))
    curves.setdefault(f"deletion[{name}]", []).append(deletion)
    curves.setdefault(f"insertion[{name}]", []).append(insertion)


def randomisation_check(
    setup: Setup, method_cfg: MethodConfig, faith: FaithfulnessConfig, progress: bool
) -> dict | None:
    """Cascading randomisation: each method's maps after randomising the layers from the top down to each
    layer, compared with the original maps (mean Spearman and SSIM over the images)."""
    if not faith.randomisation_images:
        return None
    setup_slice = Setup(
        setup.model, setup.source, setup.class_names, setup.fn, setup.start,
        min(setup.stop, setup.start + faith.randomisation_images),
    )  # fmt: skip
    batch = next(batches(setup_slice, faith.randomisation_images))
    classes_B = setup.fn.classes_for(batch.pixels_BCHW, batch.labels_B)
    methods = list(faith.randomisation_methods)
    original = {m: attribute(setup.fn, m, batch.pixels_BCHW, classes_B, method_cfg).maps_BHW for m in methods}
    generator = torch.Generator().manual_seed(method_cfg.seed)
    a, b = (torch.rand(len(classes_B), *batch.pixels_BCHW.shape[-2:], generator=generator) for _ in range(2))
    reference = {name: float(v.mean()) for name, v in fm.similarity(a, b).items()}
    layers: list[str] = []
    result = {m: {"spearman": [], "ssim": []} for m in methods}
    groups = fm.layer_groups(setup.model)
    bar = tqdm(total=len(groups), unit="layer", desc="randomisation", disable=not progress)
    for name in fm.cascade(setup.model, seed=method_cfg.seed):
        layers.append(name)
        for m in methods:
            maps = attribute(setup.fn, m, batch.pixels_BCHW, classes_B, method_cfg).maps_BHW
            for metric, per_image in fm.similarity(original[m], maps).items():
                result[m][metric].append(float(per_image.mean()))
        bar.update(1)
    bar.close()
    return {
        "images": len(classes_B),
        "layers_randomised_cumulatively": layers,
        "methods": result,
        "two_random_maps": reference,
    }


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(AttributeConfig, args)
    method_cfg = config_from_args(MethodConfig, args)
    faith = config_from_args(FaithfulnessConfig, args)
    setup = open_setup(
        cfg.model, cfg.source, cfg.target, cfg.sae, cfg.start, cfg.n_images, cfg.device, cfg.allow_other_model
    )
    if faith.curve_target:
        Target.parse(faith.curve_target, setup.class_names)
    result = evaluate(setup, cfg, method_cfg, faith)
    result["randomisation"] = randomisation_check(setup, method_cfg, faith, cfg.progress)
    write_outputs(setup, cfg, method_cfg, faith, result)
    print((cfg.out / "table.md").read_text())
    return 0


def markdown_table(result: dict) -> str:
    """The method x metric table as Markdown (mean ± standard error; arrows say which way is better)."""
    names = list(result["columns"])
    header = ["method", *(f"{c} {'↓' if result['columns'][c] == 'lower' else '↑'}" for c in names), "s/img"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in result["rows"]:
        row = result["table"][method]
        cells = [f"{row[c]:.3f} ± {result['standard_error'][method][c]:.3f}" for c in names]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {row['seconds_per_image']:.3f} |")
    return "\n".join(lines) + "\n"


def write_outputs(
    setup: Setup, cfg: AttributeConfig, method_cfg: MethodConfig, faith: FaithfulnessConfig, result: dict
) -> None:
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    shown = result.pop("shown")
    save_tensors_atomic(out / "faithfulness.safetensors", result.pop("per_image"))
    n_shown = min((len(v) for v in shown.values()), default=0)
    if n_shown:
        indices = list(range(setup.start, setup.start + n_shown))
        images = display_images(setup, indices)
        maps = {m: v[:n_shown].numpy() for m, v in shown.items()}
        save_grid(
            out / "grid.png", images, maps, [str(i) for i in indices], title=f"{cfg.model} {cfg.target}"
        )
    write_bytes_atomic(out / "table.md", markdown_table(result).encode())
    if result["curves"] and any(result["curves"].values()):
        write_bytes_atomic(out / "curves.png", _plot_curves(result))
    if result["randomisation"] is not None:
        write_bytes_atomic(out / "randomisation.png", _plot_randomisation(result["randomisation"]))
    write_json_atomic(
        out / "faithfulness.json",
        {
            "format": FORMAT,
            "version": VERSION,
            "config": config_to_dict(cfg),
            "method_config": config_to_dict(method_cfg),
            "faithfulness_config": config_to_dict(faith),
            "target": setup.fn.target.describe(),
            "model_weights_hash": setup.model.weights_hash(),
            "source": setup.source.describe(),
            "n_images": setup.stop - setup.start,
            "ground_truth_concept": GROUND_TRUTH_CONCEPT if "pointing_game" in result["columns"] else None,
            **result,
        },
    )


def _figure_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _plot_curves(result: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({key.split("[")[1][:-1] for per in result["curves"].values() for key in per})
    fig, axes = plt.subplots(2, len(kinds), figsize=(3 * len(kinds), 5.2), squeeze=False)
    for col, kind in enumerate(kinds):
        for row, curve in enumerate(("deletion", "insertion")):
            ax = axes[row, col]
            for method, per in result["curves"].items():
                ys = per.get(f"{curve}[{kind}]")
                if ys is None:
                    continue
                xs = np.linspace(0, 1, len(ys))
                if kind == "patch" and result["patch_fractions"]:
                    fractions = result["patch_fractions"]
                    xs = fractions if curve == "deletion" else [1 - f for f in reversed(fractions)]
                ax.plot(xs, ys, label=method, linestyle="--" if method == RANDOM else "-")
            ax.set_title(f"{curve}, {kind}", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=6)
    return _figure_bytes(fig)


def _plot_randomisation(check: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = check["layers_randomised_cumulatively"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric in zip(axes, ("spearman", "ssim"), strict=True):
        for method, values in check["methods"].items():
            ax.plot(range(len(layers)), values[metric], marker="o", label=method)
        ax.axhline(check["two_random_maps"][metric], color="grey", linestyle="--", label="two random maps")
        ax.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize=6)
        ax.set_title(f"{metric} with the original map (layers randomised from the output down)", fontsize=8)
        ax.set_ylim(-0.2, 1.05)
    axes[0].legend(fontsize=6)
    return _figure_bytes(fig)
