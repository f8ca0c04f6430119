"""`vitsae browse`: write the static feature browser for a statistics directory made by `vitsae stats`.

The images and their preprocessing come from what the statistics recorded; the logit effects from the
`logit_effects.safetensors` that `vitsae stats` saved beside them (absent, with a note, when the model had
no linear classification head). The browser only renders these files: it loads no model and no SAE.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vitsae.analysis.ablation_file import read_ablation_effects
from vitsae.analysis.logits import LOGIT_EFFECTS_FILE, LogitEffects
from vitsae.analysis.stats import FeatureStats
from vitsae.config import add_config_arguments, config_from_args, config_from_dict
from vitsae.data.open import source_from_description
from vitsae.data.preprocess import Preprocess
from vitsae.data.sources import ImageSource
from vitsae.fileio import read_json
from vitsae.report.browser import BrowserConfig, write_browser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stats", type=Path, required=True, help="directory written by `vitsae stats`")
    parser.add_argument("--out", type=Path, required=True, help="browser directory to write (replaced)")
    parser.add_argument("--labels", type=Path, default=None, help='JSON {"<feature id>": "concept label"}')
    parser.add_argument("--features", type=int, nargs="+", default=None, help="only these features get pages")
    parser.add_argument("--no-images", action="store_true", help="write numbers only, without the images")
    add_config_arguments(parser, BrowserConfig)


def _images(stats: FeatureStats, no_images: bool) -> tuple[ImageSource | None, Preprocess | None]:
    if no_images:
        return None, None
    description = stats.meta.get("source")
    if not description:
        raise ValueError("the statistics record no image source; pass --no-images to write numbers only")
    try:
        source = source_from_description(description)
    except ValueError as err:
        raise ValueError(f"{err}; pass --no-images to write numbers only") from err
    recorded = stats.meta.get("preprocess")
    return source, None if recorded is None else config_from_dict(Preprocess, recorded)


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(BrowserConfig, args)
        stats = FeatureStats.load(args.stats)
        source, preprocess = _images(stats, args.no_images)
        labels: dict[int, str] = {}
        if args.labels is not None:
            raw: dict[str, Any] = read_json(args.labels)
            labels = {int(key): str(value) for key, value in raw.items()}
        effects = LogitEffects.load(args.stats)
        if effects is None:
            print(
                f"vitsae browse: no logit effects: {args.stats} holds no {LOGIT_EFFECTS_FILE} "
                "(`vitsae stats` writes it when the model has a linear classification head)",
                file=sys.stderr,
            )
        class_names = None if source is None else source.describe().get("classes")
        ablation = read_ablation_effects(args.stats)
        index = write_browser(
            stats,
            args.out,
            source=source,
            preprocess=preprocess,
            class_names=class_names,
            logits=effects,
            feature_labels=labels,
            features=args.features,
            config=config,
            description=str(stats.meta.get("hook", "")),
            ablation=ablation,
        )
    except (ValueError, FileNotFoundError, FileExistsError, json.JSONDecodeError) as err:
        print(f"vitsae browse: error: {err}", file=sys.stderr)
        return 2
    print(index)
    return 0
