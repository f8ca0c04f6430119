"""Harvest a model's activations at one or more hooks into on-disk stores, resumably and in parallel.

Layout: `<out>/harvest.json` (the run's config, model hash, source description) and one store per hook
in `<out>/<hook>/`. Images are cut into shards of `images_per_shard` consecutive source indices (a
multiple of the batch size, so batches never straddle shards); shard k of every hook comes from the
same forward passes. A shard is done once its file and its sidecar `<hook>/.progress/shard-k.json`
(rows, bytes, sha256, float64 sums, skipped images) exist and agree in size and sha256; a rerun
recomputes only the shards that are not done (also after the store was finished: a damaged or missing
shard is recomputed, a manifest that disagrees with the sidecars rewritten), and
the manifest is built from the sidecars in shard order, so an interrupted-and-resumed or a multi-process
harvest writes exactly the bytes and manifest of an uninterrupted one-process run.
Under torchrun each rank harvests a contiguous block of shards; rank 0 writes the manifests.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from vitsae.config import config_to_dict, content_fields, describe_differences
from vitsae.data.loader import ImageLoader
from vitsae.data.open import open_source
from vitsae.data.sources import ImageSource
from vitsae.distributed import barrier, init_if_torchrun, local_device, rank_world
from vitsae.errors import InvalidValue
from vitsae.fileio import read_json, write_bytes_atomic, write_json_atomic
from vitsae.store.config import HarvestConfig
from vitsae.store.format import (
    DTYPES,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    StoreError,
    shard_bytes,
    shard_name,
)
from vitsae.store.stats import RunningStats
from vitsae.store.verify import block_hashes, block_rows_for, sha256_problem, size_problem
from vitsae.tokens import TokenLayout, provenance_rows, select_tokens

if TYPE_CHECKING:  # the protocol only: readers of a store never import the models
    from vitsae.models.protocol import HookedModel

RUN_RECORD = "harvest.json"
PROGRESS_DIR = ".progress"
# what the manifest lists per shard, copied from its sidecar (block checksums: stores since 2026-12-06)
MANIFEST_SHARD_KEYS = ("file", "rows", "bytes", "sha256", "block_rows", "block_sha256", "images")


@dataclass
class _HookPlan:
    """What is stored for one hook: its directory, token layout, kept tokens and width."""

    name: str
    directory: Path
    layout: TokenLayout
    tokens_T: torch.Tensor  # int64 token indices kept per image
    width: int

    @property
    def rows_per_image(self) -> int:
        return len(self.tokens_T)


class _ShardBuffer:
    """A fixed-size buffer of one shard's rows for one hook (memory independent of the dataset size)."""

    def __init__(self, plan: _HookPlan, images: int, dtype: torch.dtype) -> None:
        rows = images * plan.rows_per_image
        self.plan = plan
        self.acts_RD = torch.empty(rows, plan.width, dtype=dtype)
        self.image_R = torch.empty(rows, dtype=torch.int64)
        self.token_R = torch.empty(rows, dtype=torch.int32)
        self.reset()

    def reset(self) -> None:
        self.rows = 0
        self.stats = RunningStats(self.plan.width)

    def add(self, acts_BTD: torch.Tensor, indices_B: torch.Tensor, dtype: torch.dtype) -> None:
        kept_BTD = acts_BTD.index_select(1, self.plan.tokens_T.to(acts_BTD.device))
        batch, tokens, width = kept_BTD.shape
        if width != self.plan.width:
            raise StoreError(
                f"hook {self.plan.name}: collect returned width {width}, "
                f"its token layout says {self.plan.width}"
            )
        rows = batch * tokens
        stored_RD = kept_BTD.reshape(rows, width).to(dtype)
        self.stats.update(stored_RD)  # on the model's device, before the copy to host memory
        end = self.rows + rows
        image_R, token_R = provenance_rows(indices_B.numpy(), self.plan.tokens_T.numpy())
        self.acts_RD[self.rows : end].copy_(stored_RD)
        self.image_R[self.rows : end] = torch.from_numpy(image_R)
        self.token_R[self.rows : end] = torch.from_numpy(token_R)
        self.rows = end


def _plan_hooks(model: HookedModel, config: HarvestConfig) -> list[_HookPlan]:
    model.check_hook_names(list(config.hooks))
    plans = []
    for hook in config.hooks:
        layout = model.token_layout(hook)
        tokens = select_tokens(layout, config.tokens, config.include_registers)
        if len(tokens) == 0:
            raise InvalidValue(
                f"hook {hook}: token selection {config.tokens!r} keeps no tokens of its layout {layout}"
            )
        plans.append(
            _HookPlan(
                hook, config.out / hook, layout, torch.from_numpy(tokens.astype(np.int64)), int(layout.width)
            )
        )
    return plans


def images_per_shard(config: HarvestConfig, max_rows_per_image: int) -> int:
    """Whole batches per shard, as many as fit in `shard_rows` rows (at least one batch)."""
    return config.batch_size * max(1, config.shard_rows // (max_rows_per_image * config.batch_size))


def _run_record(
    config: HarvestConfig, model: HookedModel, source: ImageSource, per_shard: int
) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": content_fields(config),
        "model_hash": model.weights_hash(),
        "source": source.describe(),
        "images_per_shard": per_shard,
    }


def _record_differences(saved: dict[str, Any], record: dict[str, Any], holder: str = "store") -> list[str]:
    """What differs between a recorded harvest and this one (the config's content fields, the model's
    weights, the source, the format and the shard size), one line each."""
    return describe_differences(saved, record, holder)


def _check_or_write_record(config: HarvestConfig, record: dict[str, Any], rank: int, world: int) -> None:
    """Refuse to continue a store made by a different configuration, or ranks that disagree on the
    model, source or options; otherwise record this configuration."""
    if world > 1:
        records: list[Any] = [None] * world
        dist.all_gather_object(records, record)
        for other, theirs in enumerate(records[1:], start=1):
            diffs = _record_differences(records[0], theirs, holder="rank 0")
            if diffs:
                raise StoreError(
                    f"rank {other} loaded a different model, source or options than rank 0:\n  "
                    + "\n  ".join(diffs)
                )
    path = config.out / RUN_RECORD
    if path.exists():
        diffs = _record_differences(read_json(path), record)
        if diffs:
            raise StoreError(
                f"{config.out} holds a harvest with a different configuration; differing "
                "fields:\n  "
                + "\n  ".join(diffs)
                + "\nuse another --out directory, or delete this one to start over"
            )
    barrier()
    if rank == 0:
        if not path.exists():
            write_json_atomic(path, record)
        for pattern in (".*.tmp", "*/.*.tmp", f"*/{PROGRESS_DIR}/.*.tmp"):
            for stale in config.out.glob(pattern):
                stale.unlink()
    barrier()


def _sidecar(plan: _HookPlan, shard: int) -> Path:
    return plan.directory / PROGRESS_DIR / f"{shard_name(shard)}.json"


def _shard_done(plans: list[_HookPlan], shard: int) -> bool:
    """Whether every hook's shard `shard` is written and has its sidecar's size and sha256."""
    for plan in plans:
        sidecar = _sidecar(plan, shard)
        if not sidecar.exists():
            return False
        record, path = read_json(sidecar), plan.directory / shard_name(shard)
        if size_problem(path, record["bytes"]) or sha256_problem(path, record["sha256"]):
            return False
    return True


def _manifest_current(plan: _HookPlan, n_shards: int) -> bool:
    """Whether the hook's manifest exists and lists every shard as its sidecar records it (a damaged or
    edited manifest is rewritten by a rerun)."""
    try:
        listed = read_json(plan.directory / MANIFEST_NAME)["shards"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    recorded = [
        {k: v for k, v in read_json(_sidecar(plan, s)).items() if k in MANIFEST_SHARD_KEYS}
        for s in range(n_shards)
    ]
    return listed == recorded


def _runs(shards: list[int]) -> Iterator[tuple[int, int]]:
    """Maximal runs of consecutive shard numbers as [first, last + 1)."""
    i = 0
    while i < len(shards):
        j = i
        while j + 1 < len(shards) and shards[j + 1] == shards[j] + 1:
            j += 1
        yield shards[i], shards[j] + 1
        i = j + 1


def _write_shard(buffer: _ShardBuffer, shard: int, images: tuple[int, int], skipped: list[dict]) -> None:
    plan, rows = buffer.plan, buffer.rows
    data = shard_bytes(buffer.acts_RD[:rows], buffer.image_R[:rows], buffer.token_R[:rows])
    write_bytes_atomic(plan.directory / shard_name(shard), data)
    row_bytes = plan.width * buffer.acts_RD.element_size()
    block_rows = block_rows_for(row_bytes)
    acts_bytes = memoryview(buffer.acts_RD[:rows].view(torch.uint8).numpy()).cast("B")
    write_json_atomic(
        _sidecar(plan, shard),
        {
            "file": shard_name(shard),
            "rows": rows,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "block_rows": block_rows,
            "block_sha256": block_hashes(acts_bytes, block_rows * row_bytes),
            "images": list(images),
            "skipped": skipped,
            "stats": buffer.stats.to_dict(),
        },
    )


def _harvest_shards(
    model: HookedModel,
    source: ImageSource,
    config: HarvestConfig,
    plans: list[_HookPlan],
    shards: list[int],
    per_shard: int,
    show_progress: bool,
) -> None:
    dtype = DTYPES[config.dtype][0]
    device = local_device(config.device)
    n_images = len(source)
    buffers = [_ShardBuffer(plan, per_shard, dtype) for plan in plans]
    names = [plan.name for plan in plans]
    total = sum(min(n_images, (s + 1) * per_shard) - s * per_shard for s in shards)
    bar = tqdm(total=total, unit="img", desc="harvest", disable=not show_progress, smoothing=0.1)

    def flush_until(limit: int, current: int, reported: int, loader: ImageLoader) -> tuple[int, int]:
        """Write every finished shard from `current` up to `limit`, with the images skipped in each;
        returns the next shard and how many of the loader's skipped images are reported."""
        while current < limit:
            skipped_here = [s for s in loader.skipped[reported:] if s.index < (current + 1) * per_shard]
            reported += len(skipped_here)
            images = (current * per_shard, min(n_images, (current + 1) * per_shard))
            skipped = [{"index": s.index, "key": s.key, "reason": s.reason} for s in skipped_here]
            for buffer in buffers:
                _write_shard(buffer, current, images, skipped)
                buffer.reset()
            bar.update(len(skipped_here))
            current += 1
        return current, reported

    for first, stop in _runs(shards):
        loader = ImageLoader(
            source,
            model.preprocess,
            config.batch_size,
            config.num_workers,
            first * per_shard,
            min(n_images, stop * per_shard),
        )
        current, reported = first, 0
        for batch in loader:
            current, reported = flush_until(int(batch.indices_B[0]) // per_shard, current, reported, loader)
            acts = model.collect(batch.pixels_BCHW.to(device), names)
            for buffer in buffers:
                buffer.add(acts[buffer.plan.name], batch.indices_B, dtype)
            bar.update(len(batch.indices_B))
        flush_until(stop, current, reported, loader)
    bar.close()


def _finish(
    config: HarvestConfig,
    plans: list[_HookPlan],
    model: HookedModel,
    source: ImageSource,
    n_shards: int,
    per_shard: int,
) -> None:
    """Merge every shard's sidecar into each hook's manifest (rank 0, after all ranks are done)."""
    record = read_json(config.out / RUN_RECORD)
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for plan in plans:
        stats, shards, skipped = RunningStats(plan.width), [], []
        for shard in range(n_shards):  # one sidecar at a time: memory stays independent of the store size
            path = _sidecar(plan, shard)
            if not path.exists():
                raise StoreError(
                    f"shard {shard} of {plan.directory} was not finished ({path} is missing); "
                    "rerun the same command to complete the harvest"
                )
            sidecar = read_json(path)
            stats.add(RunningStats.from_dict(sidecar["stats"]))
            shards.append({key: sidecar[key] for key in MANIFEST_SHARD_KEYS if key in sidecar})
            skipped.extend(sidecar["skipped"])
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "created": created,
            "hook": plan.name,
            "model": {"spec": config.model, "weights_hash": record["model_hash"]},
            "preprocess": config_to_dict(model.preprocess),
            "source": record["source"],
            "tokens": {
                "selection": config.tokens,
                "include_registers": config.include_registers,
                "token_indices": plan.tokens_T.tolist(),
            },
            "token_layout": plan.layout.to_dict(),
            "width": plan.width,
            "dtype": config.dtype,
            "harvest": {**content_fields(config), "images_per_shard": per_shard},
            "counts": {
                "images": len(source),
                "images_skipped": len(skipped),
                "images_stored": len(source) - len(skipped),
                "rows_per_image": plan.rows_per_image,
                "rows": stats.rows,
                "shards": n_shards,
            },
            "shards": shards,
            "stats": {**stats.summary(), "dtype": "float64", "over": "stored values"},
            "skipped": skipped,
        }
        write_json_atomic(plan.directory / MANIFEST_NAME, manifest)


def harvest(
    config: HarvestConfig, *, model: HookedModel | None = None, source: ImageSource | None = None
) -> dict[str, Path]:
    """Run (or resume) a harvest; returns each hook's store directory.

    `model` and `source` default to loading `config.model` and `config.source`; pass them to reuse
    objects already in memory (they must be what the spec strings describe: the manifest records those).
    """
    # the group carries only barriers and one gather; ranks may finish their shards hours apart
    initialised = init_if_torchrun("gloo", timeout=datetime.timedelta(hours=24))
    rank, world = rank_world()
    try:
        if model is None:
            from vitsae.models import load  # here, not at the top: readers of a store need no models

            model = load(config.model)
        model = model.to(local_device(config.device)).eval()
        source = open_source(config.source) if source is None else source
        plans = _plan_hooks(model, config)
        per_shard = images_per_shard(config, max(plan.rows_per_image for plan in plans))
        n_shards = -(-len(source) // per_shard)
        _check_or_write_record(config, _run_record(config, model, source, per_shard), rank, world)
        # the sidecars stay after the manifest is written: a shard deleted later is recomputed by a rerun
        checking = tqdm(  # a rerun hashes every shard written so far
            range(n_shards), desc="check shards", unit="shard", disable=not (config.progress and rank == 0)
        )
        pending_all = [s for s in checking if not _shard_done(plans, s)]
        checking.close()
        complete = not pending_all and all(_manifest_current(plan, n_shards) for plan in plans)
        if not complete:
            mine = range(rank * n_shards // world, (rank + 1) * n_shards // world)
            pending = [s for s in pending_all if s in mine]
            with torch.inference_mode():
                _harvest_shards(
                    model, source, config, plans, pending, per_shard, config.progress and rank == 0
                )
            barrier()
            if rank == 0:
                _finish(config, plans, model, source, n_shards, per_shard)
            barrier()
        return {plan.name: plan.directory for plan in plans}
    finally:
        if initialised:
            dist.destroy_process_group()
