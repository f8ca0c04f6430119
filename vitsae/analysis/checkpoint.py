"""Checkpoints of a statistics pass over a store, so that rerunning an interrupted pass continues it.

A checkpoint directory holds `checkpoint.json` and the accumulator's state `state-<row>.safetensors`.
The JSON says from which store row the pass continues (the first row of the first image not yet in the
state) and what the pass computes: the store (hook, rows, a sha256 of its manifest, which lists every
shard's sha256), the SAE (a sha256 of its config and weights), the `StatsConfig` and the labels. Each
checkpoint writes a new state file first and the JSON that names it second, both atomically, then removes
the older state file, so a kill at any moment leaves either the previous checkpoint or the new one whole.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from vitsae.analysis.stats import FeatureStatsAccumulator, StatsConfig
from vitsae.config import config_to_dict, content_fields, describe_differences
from vitsae.errors import VitsaeError
from vitsae.fileio import (
    check_format,
    load_safetensors,
    read_json,
    save_tensors_atomic,
    weights_hash,
    write_json_atomic,
)
from vitsae.sae.model import SparseAutoencoder
from vitsae.store.reader import ActivationStore

CHECKPOINT_FORMAT = "vitsae.feature_stats_checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_META = "checkpoint.json"


class CheckpointMismatch(VitsaeError, ValueError):
    """A checkpoint directory holds a pass over other inputs (store, SAE, options or labels)."""


def pass_identity(
    store: ActivationStore, sae: SparseAutoencoder, config: StatsConfig, labels_I: torch.Tensor | None
) -> dict[str, Any]:
    """What a checkpoint must agree on to be continued: every input that changes the statistics."""
    manifest = {key: value for key, value in store.manifest.items() if key != "created"}
    manifest_json = json.dumps(manifest, sort_keys=True, default=str).encode()
    labels = None
    if labels_I is not None:
        labels = hashlib.sha256(labels_I.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()
    return {
        "store": {
            "hook": store.hook,
            "rows": len(store),
            "manifest_sha256": hashlib.sha256(manifest_json).hexdigest(),
        },
        "sae": {"d_sae": sae.cfg.d_sae, "weights_hash": weights_hash(sae, config_to_dict(sae.cfg))},
        "config": content_fields(config),
        "labels_sha256": labels,
    }


def _restart(directory: Path) -> str:
    return f"delete {directory} (or pass --restart) to start the pass over"


def clear_stale_files(directory: Path) -> None:
    """Remove state files the JSON does not name and temporary files a killed write left behind."""
    if not directory.is_dir():
        return
    meta = directory / CHECKPOINT_META
    named = read_json(meta, _restart(directory), dict).get("state_file") if meta.is_file() else None
    for path in directory.glob("state-*.safetensors"):
        if path.name != named:
            path.unlink()
    for path in directory.glob(".*.tmp"):
        path.unlink()


def load_checkpoint(directory: Path, identity: dict[str, Any], acc: FeatureStatsAccumulator) -> int | None:
    """Load a checkpoint of this pass into `acc` and return the row to continue from (None: none there).

    A checkpoint of another pass raises `CheckpointMismatch` naming what differs; `acc` is left alone.
    """
    meta_path = directory / CHECKPOINT_META
    if not meta_path.is_file():
        return None
    info = read_json(meta_path, _restart(directory), dict)
    fix = f"delete {directory} to start the pass over"
    check_format(meta_path, info, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CheckpointMismatch, fix)
    diffs = describe_differences(info.get("identity", {}), identity, "the checkpoint")
    if diffs:
        raise CheckpointMismatch(
            f"{directory} holds a partial statistics pass over different inputs: "
            f"{'; '.join(diffs)}. Rerun with the inputs it was started with to continue it, or delete "
            f"{directory} to start over"
        )
    state_path = directory / str(info.get("state_file"))
    if not state_path.is_file():
        raise CheckpointMismatch(
            f"{meta_path} names {state_path.name}, which is missing; delete {directory} "
            "to start the pass over"
        )
    acc.load_state_dict(load_safetensors(state_path, _restart(directory)))
    return int(info["next_row"])


def save_checkpoint(
    directory: Path, identity: dict[str, Any], acc: FeatureStatsAccumulator, next_row: int
) -> None:
    """Save `acc` (holding every image before store row `next_row`) as the directory's checkpoint."""
    state_file = f"state-{next_row:012d}.safetensors"
    save_tensors_atomic(directory / state_file, acc.state_dict())
    write_json_atomic(
        directory / CHECKPOINT_META,
        {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "next_row": next_row,
            "images_done": acc.n_images,
            "state_file": state_file,
            "identity": identity,
        },
    )
    clear_stale_files(directory)
