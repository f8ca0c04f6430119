"""`vitsae stats`: one streaming pass of an SAE over a store, saved for the browser and later analysis.

Every option is a field of `StatsConfig`. Beside the statistics it saves the logit effects of the SAE's
decoder directions (`logit_effects.safetensors`) when the model (the store's recorded one, or `--model`) has
a linear classification head.

The pass checkpoints into `<out>/.feature_stats.partial/`; rerunning the same command after an
interruption continues from there, and the directory is removed once the statistics are saved.
"""

from __future__ import annotations

import argparse
import shutil
import sys

from vitsae.analysis.checkpoint import CheckpointMismatch
from vitsae.analysis.compute import compute_feature_stats
from vitsae.analysis.images import IMAGES_META, IMAGES_TENSORS, compute_image_data, first_images
from vitsae.analysis.logits import LOGIT_EFFECTS_FILE, LogitEffects, model_logit_effects, unembedding
from vitsae.analysis.neighbours import compute_neighbours
from vitsae.analysis.predictions import image_predictions
from vitsae.analysis.stats import PARTIAL_DIR, StatsConfig
from vitsae.config import add_config_arguments, config_from_args
from vitsae.edit import SpliceSite
from vitsae.fileio import check_output_folder
from vitsae.sae.io import load_sae
from vitsae.store.reader import ActivationStore

__all__ = ["PARTIAL_DIR", "add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, StatsConfig)


def _logit_effects(model: str | None, store: ActivationStore, W_dec_FD) -> tuple[LogitEffects | None, str]:
    """The logit effects through `model`'s head (default: the store's recorded model), or None and why."""
    spec = model if model is not None else (store.manifest.get("model") or {}).get("spec")
    if spec in (None, "", "none"):
        return None, "no model spec"
    return model_logit_effects(spec, W_dec_FD, explicit=model is not None)


def _explorer_files(config: StatsConfig, stats, store: ActivationStore, sae) -> None:
    """The nearest features, and with `--images N` the image explorer's per-image data, for the browser."""
    compute_neighbours(stats, sae.W_dec, config.neighbours).save(config.out)
    if not config.images and not config.image_ids:
        for name in (IMAGES_META, IMAGES_TENSORS):  # a stale one would describe another SAE
            (config.out / name).unlink(missing_ok=True)
        return
    chosen = list(config.image_ids) if config.image_ids else first_images(store, config.images)
    data = compute_image_data(store, sae, chosen, progress=config.progress)
    model, why_not = _classifier(config.model, store)
    if model is None:
        print(f"vitsae stats: no predictions on the image pages: {why_not}", file=sys.stderr)
    else:
        site = SpliceSite(sae, hook_name=store.hook)
        data.meta["predictions"] = image_predictions(
            model, site, data, store.source(), store.preprocess, progress=config.progress
        )
    data.save(config.out)


def _classifier(model: str | None, store: ActivationStore):
    """The model (`--model`, else the store's recorded one) when it has a linear classification head, or
    None and why not. A recorded model that cannot be loaded is skipped; one the user named is an error."""
    from vitsae.models import load

    spec = model if model is not None else (store.manifest.get("model") or {}).get("spec")
    if spec in (None, "", "none"):
        return None, "no model spec"
    if model is None and str(spec).startswith("module:"):
        return (
            None,
            f"the store records the model {spec!r}; vitsae does not run code named in a file: pass --model",
        )
    try:
        loaded = load(spec)
    except (ValueError, FileNotFoundError, OSError, ImportError) as err:
        if model is not None:
            raise
        return None, f"the recorded model {spec!r} could not be loaded ({err})"
    try:
        unembedding(loaded)
    except ValueError as err:
        return None, str(err)
    return loaded.eval(), ""


def run(args: argparse.Namespace) -> int:
    config = config_from_args(StatsConfig, args)
    partial = check_output_folder(config.out) / PARTIAL_DIR
    if config.restart and partial.exists():
        shutil.rmtree(partial)
    store = ActivationStore.open(config.store)
    sae = load_sae(config.sae, device=config.device)
    effects, why_not = _logit_effects(config.model, store, sae.W_dec)

    def resumed(row: int) -> None:
        print(f"resuming the statistics pass at row {row} of {len(store)} from {partial}", flush=True)

    try:
        stats = compute_feature_stats(
            store,
            sae,
            config,
            batch_rows=config.batch_rows,
            merge_rows=config.merge_rows,
            progress=config.progress,
            checkpoint_dir=partial,
            checkpoint_every_rows=config.checkpoint_every_rows,
            on_resume=resumed,
        )
    except CheckpointMismatch as err:
        raise CheckpointMismatch(f"{err} (or pass --restart)") from err
    stats.meta["sae"] = str(config.sae.resolve())
    stats.save(config.out)
    if effects is not None:
        effects.save(config.out)
    else:
        (config.out / LOGIT_EFFECTS_FILE).unlink(missing_ok=True)  # a stale one would describe another SAE
        print(f"vitsae stats: no logit effects: {why_not}", file=sys.stderr)
    _explorer_files(config, stats, store, sae)
    if partial.exists():
        shutil.rmtree(partial)
    live = int((stats.fire_count_F > 0).sum())
    print(
        f"{stats.n_features} features ({live} fire, {stats.n_features - live} dead) over "
        f"{stats.n_images} images and {stats.n_tokens} tokens -> {config.out}"
    )
    return 0
