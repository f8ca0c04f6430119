"""`vitsae demo`: the whole pipeline on the embedded default, through the same subcommands a user types.

harvest -> train -> stats -> browse -> eval on the shipped shapes ViT and a freshly generated shapes set. Each
stage is printed as the command that reproduces it; rerunning the demo resumes or reuses every stage.
"""

from __future__ import annotations

import argparse
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vitsae.config import add_config_arguments, check_choices, config_from_args
from vitsae.errors import InvalidValue
from vitsae.fileio import read_json
from vitsae.sae.config import Architecture


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs on; the defaults finish in a few minutes on 2 CPU cores."""

    out: Path = field(default=Path("runs/demo"), metadata={"help": "folder for every stage's output"})
    model: str = field(default="vitsae:shapes-vit", metadata={"help": "model spec"})
    hook: str = field(default="", metadata={"help": "hook to study (default: middle block output)"})
    n_images: int = field(default=3000, metadata={"help": "shapes images to generate"})
    data_seed: int = field(default=7, metadata={"help": "seed of the shapes images (not a training seed)"})
    architecture: Architecture = field(default="topk", metadata={"help": "SAE architecture"})
    expansion_factor: int = field(default=8, metadata={"help": "dictionary size / model width"})
    k: int = field(default=16, metadata={"help": "active features per token (topk, batchtopk)"})
    total_tokens: int = field(default=1_500_000, metadata={"help": "activation rows to train on"})
    batch_size: int = field(default=4096, metadata={"help": "activation rows per training step"})
    explorer_images: int = field(
        default=100, metadata={"help": "images that get an image explorer page in the browser"}
    )
    eval_images: int = field(
        default=256,
        metadata={"help": "held-out shapes images for the spliced evaluation (at most --n-images)"},
    )

    def __post_init__(self) -> None:
        check_choices(self)


def default_hook(model_spec: str) -> str:
    """The residual stream after the middle block: concrete enough to hold shape and colour features."""
    from vitsae.models import load

    model = load(model_spec)
    n_layers = getattr(getattr(model, "cfg", None), "n_layers", None)
    if n_layers is None:
        raise InvalidValue(f"{model_spec} is not a ViT: pass --hook (valid: {', '.join(model.hook_names())})")
    return f"blocks.{n_layers // 2}.hook_resid_post"


def _stage(title: str, argv: list[str], main: Callable[[list[str]], int]) -> None:
    print(f"\n== {title}\n$ vitsae {shlex.join(argv)}", flush=True)
    started = time.perf_counter()
    code = main(argv)
    if code:
        raise SystemExit(f"vitsae demo: stage '{title}' failed with exit code {code}")
    print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)


def run_demo(cfg: DemoConfig, main: Callable[[list[str]], int]) -> Path:
    """Run every stage through `main` (the `vitsae` entry point); return the browser's index.html."""
    hook = cfg.hook or default_hook(cfg.model)
    out = cfg.out
    store_dir, sae_root, stats_dir, browser_dir = out / "store", out / "sae", out / "stats", out / "browser"
    _stage(
        "harvest activations",
        [
            "harvest",
            "--model",
            cfg.model,
            "--source",
            f"shapes:{cfg.n_images}:{cfg.data_seed}",
            "--hooks",
            hook,
            "--out",
            str(store_dir),
            "--batch-size",
            "64",
        ],
        main,
    )
    _stage(
        "train the SAE",
        [
            "train",
            "--store",
            str(store_dir / hook),
            "--out",
            str(sae_root),
            "--architecture",
            cfg.architecture,
            "--expansion-factor",
            str(cfg.expansion_factor),
            "--k",
            str(cfg.k),
            "--total-tokens",
            str(cfg.total_tokens),
            "--batch-size",
            str(cfg.batch_size),
            "--lr",  # explicit: the rate derived for F = 768 (4e-3) left 29% of the features never
            "4e-4",  # firing on the demo store against 4.8% at 4e-4 (docs/training.md)
            "--lr-warmup-steps",
            "20",
            "--dead-tokens",
            str(min(cfg.total_tokens // 4, 1 << 18)),
            "--checkpoint-every",
            "100",
        ],
        main,
    )
    summaries = read_json(sae_root / "sweep.json")
    ((run_name, summary),) = summaries.items()
    sae_dir = sae_root / run_name
    _stage(
        "feature statistics",
        [
            "stats",
            "--store",
            str(store_dir / hook),
            "--sae",
            str(sae_dir),
            "--out",
            str(stats_dir),
            "--images",
            str(min(cfg.explorer_images, cfg.n_images)),
            "--progress",
        ],
        main,
    )
    _stage("feature browser", ["browse", "--stats", str(stats_dir), "--out", str(browser_dir)], main)
    n_eval = min(cfg.eval_images, cfg.n_images)
    _stage(
        "spliced evaluation",
        [
            "eval",
            "--model",
            cfg.model,
            "--sae",
            str(sae_dir),
            "--source",
            f"shapes:{n_eval}:{cfg.data_seed + 1}",
            "--images",
            str(n_eval),
            "--out",
            str(out / "eval"),
        ],
        main,
    )
    evaluated = read_json(out / "eval" / "eval.json")["results"]

    from vitsae.analysis.stats import FeatureStats

    metrics = summary["final_metrics"]
    stats = FeatureStats.load(stats_dir)
    n_live = int((stats.fire_count_F > 0).sum())
    rows = [
        ("hook", hook),
        ("SAE", f"{cfg.architecture}, {stats.n_features} features"),
        ("images, tokens", f"{stats.n_images}, {stats.n_tokens}"),
        ("FVU (training)", f"{metrics['fvu']:.4f}"),
        ("L0 (training)", f"{metrics['l0']:.2f}"),
        ("dead fraction", f"{metrics['dead_fraction']:.3f}"),
        ("live features", f"{n_live} of {stats.n_features} fire on the harvested images"),
        *_spliced_rows(evaluated),
    ]
    print("\n== summary")
    for name, value in rows:
        print(f"  {name:<16} {value}")
    index = (browser_dir / "index.html").resolve()
    print(f"\nopen {index}")
    print(f"image explorer: {(browser_dir / 'images.html').resolve()}")
    return index


def _spliced_rows(evaluated: dict) -> list[tuple[str, str]]:
    """Summary lines from `vitsae eval`: the model with the SAE in place of its layer."""
    row, base = evaluated["saes"][0], evaluated["original"]
    if evaluated["output"] != "logits":
        return [("spliced cosine", f"{row['spliced']['output_cosine']:.4f} of the model's output")]
    spliced = row["spliced"]
    lines = []
    if "accuracy" in spliced:
        lines.append(
            (
                "spliced accuracy",
                f"{spliced['accuracy']:.4f} (model alone {base['accuracy']:.4f}, "
                f"{evaluated['n_images']} held-out images)",
            )
        )
    lines.append(
        (
            "spliced KL",
            f"{spliced['kl']:.4f} (zero-ablation {row['zero_ablation']['kl']:.3f}, "
            f"mean-ablation {row['mean_ablation']['kl']:.3f})",
        )
    )
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, DemoConfig)


def run(args: argparse.Namespace) -> int:
    from vitsae.cli import main

    run_demo(config_from_args(DemoConfig, args), main)
    return 0
