"""`vitsae browse`: write the static feature browser for a statistics directory made by `vitsae stats`.

Every option is a field of `BrowserConfig`. The images and their preprocessing come from what the
statistics recorded; the logit effects from the `logit_effects.safetensors` that `vitsae stats` saved beside
them (absent, with a note, when the model had no linear classification head), the nearest features from
`neighbours.safetensors`, the image explorer from `images.safetensors` (`vitsae stats --images N`), concept
labels from `dissection.json` (`vitsae dissect` into the same folder), with `--featureviz DIR` the
visualisations of `vitsae visualize` and with `--circuit DIR` the upstream and downstream features that
`vitsae trace` found. The
browser only renders these files: it loads no model and no SAE.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vitsae.analysis.ablation_file import read_ablation_effects
from vitsae.analysis.images import ImageData
from vitsae.analysis.logits import LOGIT_EFFECTS_FILE, LogitEffects
from vitsae.analysis.neighbours import Neighbours
from vitsae.analysis.stats import FeatureStats
from vitsae.config import add_config_arguments, config_from_args, config_from_dict
from vitsae.data.open import source_from_description
from vitsae.data.preprocess import Preprocess
from vitsae.data.sources import ImageSource
from vitsae.errors import InvalidValue
from vitsae.fileio import read_json
from vitsae.report.browser import BrowserConfig, write_browser
from vitsae.report.panels import read_circuit, read_dissection, read_featureviz


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, BrowserConfig)


def _images(stats: FeatureStats, no_images: bool) -> tuple[ImageSource | None, Preprocess | None]:
    if no_images:
        return None, None
    description = stats.meta.get("source")
    if not description:
        raise InvalidValue("the statistics record no image source; pass --no-images to write numbers only")
    try:
        source = source_from_description(description)
    except ValueError as err:
        raise InvalidValue(f"{err}; pass --no-images to write numbers only") from err
    recorded = stats.meta.get("preprocess")
    return source, None if recorded is None else config_from_dict(Preprocess, recorded)


def _labels(path: Path) -> dict[int, str]:
    """The feature labels of a `--labels` file: JSON {"<feature id>": "label"}."""
    try:
        raw: Any = read_json(path)
        return {int(key): str(value) for key, value in raw.items()}
    except (ValueError, AttributeError) as err:  # not JSON, not an object, or a key that is not a number
        raise InvalidValue(
            f'--labels {path} is not a JSON object of feature ids to labels, e.g. {{"12": "stripes"}} ({err})'
        ) from err


def run(args: argparse.Namespace) -> int:
    config = config_from_args(BrowserConfig, args)
    stats = FeatureStats.load(config.stats)
    source, preprocess = _images(stats, config.no_images)
    labels = {} if config.labels is None else _labels(config.labels)
    effects = LogitEffects.load(config.stats)
    if effects is None:
        print(
            f"vitsae browse: no logit effects: {config.stats} holds no {LOGIT_EFFECTS_FILE} "
            "(`vitsae stats` writes it when the model has a linear classification head)",
            file=sys.stderr,
        )
    class_names = None if source is None else source.describe().get("classes")
    ablation = read_ablation_effects(config.stats)
    index = write_browser(
        stats,
        config.out,
        source=source,
        preprocess=preprocess,
        class_names=class_names,
        logits=effects,
        feature_labels=labels,
        features=config.features,
        config=config,
        description=str(stats.meta.get("hook", "")),
        ablation=ablation,
        neighbours=Neighbours.load(config.stats),
        image_data=ImageData.load(config.stats),
        dissection=read_dissection(config.stats, stats.n_features),
        featureviz=None
        if config.featureviz is None
        else read_featureviz(config.featureviz, stats.n_features),
        circuit=None
        if config.circuit is None
        else read_circuit(config.circuit, str(stats.meta.get("hook", "")), stats.n_features),
    )
    print(index)
    return 0
