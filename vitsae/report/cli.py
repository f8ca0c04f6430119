"""`vitsae browse`: write the static feature browser for a statistics directory made by `vitsae stats`.

The images, their preprocessing, the SAE and the model come from what the statistics recorded, unless
given here; the model is needed only for the logit effects and is skipped (with a note) when it has no
linear classification head or cannot be loaded from its recorded spec.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vitsae.analysis.logits import LogitEffects, logit_effects, unembedding
from vitsae.analysis.stats import FeatureStats
from vitsae.config import add_config_arguments, config_from_args, config_from_dict
from vitsae.data.preprocess import Preprocess
from vitsae.data.sources import ImageSource, source_from_description
from vitsae.errors import InvalidValue
from vitsae.fileio import read_json

from .browser import BrowserConfig, write_browser


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


def _logits(stats: FeatureStats, config: BrowserConfig) -> tuple[LogitEffects | None, str]:
    """The logit effects, or None with the reason."""
    explicit = config.model is not None
    spec = config.model if explicit else (stats.meta.get("model") or {}).get("spec")
    sae_path = config.sae or stats.meta.get("sae")
    if spec in (None, "", "none"):
        return None, "no model spec"
    if sae_path is None:
        return None, "no SAE path recorded (pass --sae)"
    from vitsae.models import load
    from vitsae.sae.io import load_sae

    try:
        model = load(spec)
    except (ValueError, FileNotFoundError, OSError, ImportError) as err:
        if explicit:
            raise
        return None, f"the recorded model {spec!r} could not be loaded ({err})"
    try:
        head = unembedding(model)
    except ValueError as err:
        return None, str(err)
    return logit_effects(load_sae(sae_path).W_dec, head, k=config.n_logit_classes), ""


def run(args: argparse.Namespace) -> int:
    config = config_from_args(BrowserConfig, args)
    stats = FeatureStats.load(config.stats)
    source, preprocess = _images(stats, config.no_images)
    labels = {} if config.labels is None else _labels(config.labels)
    effects, why_not = _logits(stats, config)
    if effects is None:
        print(f"vitsae browse: no logit effects: {why_not}", file=sys.stderr)
    class_names = None if source is None else source.describe().get("classes")
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
    )
    print(index)
    return 0
