"""One streaming pass that turns an SAE plus activations into `FeatureStats`.

Two drivers feed the same accumulator: `compute_feature_stats` reads a harvested store sequentially
(unshuffled, so an image's rows are contiguous) and cuts its batches between images;
`compute_feature_stats_from_images` runs images through the hooked model instead of a store. The store
pass can checkpoint into a directory and continue from it after an interruption (`checkpoint.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from vitsae.analysis.checkpoint import clear_stale_files, load_checkpoint, pass_identity, save_checkpoint
from vitsae.analysis.stats import FeatureStats, FeatureStatsAccumulator, StatsConfig
from vitsae.config import config_to_dict
from vitsae.data.loader import ImageLoader
from vitsae.data.sources import ImageSource
from vitsae.errors import InvalidValue
from vitsae.sae.model import SparseAutoencoder
from vitsae.store.reader import ActivationStore

if TYPE_CHECKING:
    from vitsae.models.protocol import HookedModel


def _check_sae(sae: SparseAutoencoder, width: int, hook: str) -> None:
    if sae.cfg.d_in != width:
        raise InvalidValue(
            f"the SAE reads activations of width d_in={sae.cfg.d_in}, the hook {hook!r} has {width}"
        )
    if sae.cfg.hook_name and sae.cfg.hook_name != hook:
        raise InvalidValue(
            f"the SAE was trained on hook {sae.cfg.hook_name!r}, the activations come from {hook!r}"
        )


class NonFiniteActivations(InvalidValue):
    """Activations holding NaN or inf: the statistics (sums, maxima, samples) would be meaningless."""


def _check_finite_rows(store: ActivationStore, start: int, acts_ND: torch.Tensor) -> None:
    """Refuse rows [start, start + N) of `store` if any holds NaN or inf, naming the first one's shard,
    row, image and token."""
    finite_N = torch.isfinite(acts_ND).all(dim=1)
    if bool(finite_N.all()):
        return
    offset = int((~finite_N).nonzero()[0, 0])
    row = start + offset
    first = 0
    shard = "?"
    for entry in store.manifest["shards"]:
        if row < first + int(entry["rows"]):
            shard, row_in_shard = entry["file"], row - first
            break
        first += int(entry["rows"])
    image_N, token_N = store.provenance(np.array([row]))
    values = acts_ND[offset]
    kind = "NaN" if bool(values.isnan().any()) else "inf"
    raise NonFiniteActivations(
        f"row {row} of {store.path} (shard {shard} row {row_in_shard}, image {int(image_N[0])}, token "
        f"{int(token_N[0])}) holds {kind} activations; statistics need finite values: the model produces "
        "them at this hook (harvest in float32 or at another hook), or the shard is damaged (delete it and "
        "rerun the harvest command)"
    )


@torch.no_grad()
def _encode(sae: SparseAutoencoder, acts_ND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse codes of raw activations, on the CPU."""
    device = next(sae.parameters()).device
    codes = sae.encode_sparse(acts_ND.to(device))
    return codes.indices_BK.cpu(), codes.values_BK.float().cpu()


def _sae_meta(sae: SparseAutoencoder) -> dict[str, Any]:
    return {"sae_config": config_to_dict(sae.cfg)}


class _MergeBuffer:
    """Collects the sparse codes of whole images and hands them to the accumulator in large groups.

    Encoding needs small batches (its pre-activations are dense [rows, F]); merging into the running
    top-k costs O(F·k) per call whatever the batch holds. Grouping `merge_rows` rows per merge keeps
    that fixed cost small per token. Groups may mix code widths K (non-TopK SAEs): narrower codes are
    padded with unused slots (index 0, value 0).
    """

    def __init__(self, acc: FeatureStatsAccumulator, merge_rows: int) -> None:
        self.acc, self.merge_rows = acc, merge_rows
        self.parts: list[tuple[torch.Tensor, ...]] = []
        self.rows = 0

    def add(
        self,
        indices_NK: torch.Tensor,
        values_NK: torch.Tensor,
        image_N: torch.Tensor,
        token_N: torch.Tensor,
        label_N: torch.Tensor | None,
    ) -> None:
        if label_N is None:
            label_N = torch.full_like(image_N, -1)
        self.parts.append((indices_NK, values_NK, image_N, token_N, label_N))
        self.rows += image_N.numel()
        if self.rows >= self.merge_rows:
            self.flush()

    def flush(self) -> None:
        if not self.parts:
            return
        width = max(part[0].shape[1] for part in self.parts)

        def padded(codes_NK: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.pad(codes_NK, (0, width - codes_NK.shape[1]))

        columns = list(zip(*self.parts, strict=True))
        self.acc.update(
            torch.cat([padded(c) for c in columns[0]]),
            torch.cat([padded(c) for c in columns[1]]),
            *(torch.cat(column) for column in columns[2:]),
        )
        self.parts, self.rows = [], 0


def compute_feature_stats(
    store: ActivationStore | str | Path,
    sae: SparseAutoencoder,
    config: StatsConfig | None = None,
    *,
    batch_rows: int = 8192,
    merge_rows: int = 65536,
    labels: Sequence[int] | np.ndarray | None = None,
    progress: bool = False,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every_rows: int = 1_000_000,
    on_resume: Callable[[int], None] | None = None,
) -> FeatureStats:
    """Statistics of every feature of `sae` over every row of `store` (one sequential pass).

    Rows are encoded `batch_rows` at a time and merged into the statistics about `merge_rows` at a time.

    `labels[i]` is image i's class (negative for none); the manifest does not hold labels, so pass
    them to get class counts stored with the statistics (the browser also reads labels from the images).

    With `checkpoint_dir`, the pass saves its state there about every `checkpoint_every_rows` rows (0: never)
    and, when the directory already holds a checkpoint of the same pass (same store, SAE, config and
    labels), continues from it, calling `on_resume(row)` first; a checkpoint of another pass raises
    `CheckpointMismatch` (a ValueError) naming what differs. The caller removes the directory once it
    has saved the result. A resumed pass equals an uninterrupted one: counts, top-k choices and the random
    sample exactly, float sums to rounding (encoding batches may be cut at other rows).
    """
    if not isinstance(store, ActivationStore):
        store = ActivationStore.open(store)
    if store.normalize:
        raise InvalidValue(
            "open the store with normalize=False: the SAE applies its own norm_scale to raw rows"
        )
    if batch_rows < 1 or merge_rows < 1:
        raise InvalidValue(f"batch_rows and merge_rows must be >= 1, got {batch_rows} and {merge_rows}")
    _check_sae(sae, store.d_model, store.hook)
    acc = FeatureStatsAccumulator(sae.cfg.d_sae, store.layout, config)
    labels_I = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    n_images = int(store.manifest["counts"]["images"])
    if labels_I is not None and labels_I.shape != (n_images,):
        raise InvalidValue(f"labels has shape {tuple(labels_I.shape)}; the store covers {n_images} images")

    if checkpoint_every_rows < 0:
        raise InvalidValue(f"checkpoint_every_rows must be >= 0 (0: never), got {checkpoint_every_rows}")

    merger = _MergeBuffer(acc, merge_rows)
    n_rows = len(store)
    first_row = 0
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        identity = pass_identity(store, sae, acc.config, labels_I)
        clear_stale_files(checkpoint_dir)
        resumed = load_checkpoint(checkpoint_dir, identity, acc)
        if resumed is not None:
            first_row = resumed
            if on_resume is not None:
                on_resume(first_row)
    saved_row = first_row
    pending: tuple[torch.Tensor, np.ndarray, np.ndarray] | None = None
    bar = tqdm(total=n_rows, initial=first_row, unit="row", disable=not progress, desc="feature stats")
    for start in range(first_row, n_rows, batch_rows):
        stop = min(n_rows, start + batch_rows)
        acts_ND = store.to_float(store.read_span(start, stop))
        _check_finite_rows(store, start, acts_ND)
        image_N, token_N = store.provenance(np.arange(start, stop))
        if pending is not None:
            acts_ND = torch.cat([pending[0], acts_ND])
            image_N, token_N = np.concatenate([pending[1], image_N]), np.concatenate([pending[2], token_N])
        # Hold back the last image unless this is the end: its rows may continue in the next span.
        cut = len(image_N) if stop == n_rows else int(np.searchsorted(image_N, image_N[-1], side="left"))
        pending = (acts_ND[cut:], image_N[cut:], token_N[cut:])
        if cut:
            image_t = torch.from_numpy(image_N[:cut].astype(np.int64))
            label_t = None if labels_I is None else labels_I[image_t]
            token_t = torch.from_numpy(token_N[:cut].astype(np.int64))
            merger.add(*_encode(sae, acts_ND[:cut]), image_t, token_t, label_t)
        bar.update(stop - start)
        next_row = stop - len(pending[1])  # the held-back image is not in the statistics yet
        if checkpoint_dir is not None and checkpoint_every_rows and stop < n_rows:
            if next_row - saved_row >= checkpoint_every_rows:
                merger.flush()
                save_checkpoint(checkpoint_dir, identity, acc, next_row)
                saved_row = next_row
    merger.flush()
    bar.close()
    manifest = store.manifest
    meta = {
        "activations": "store",
        "store": str(Path(store.path).resolve()),
        "hook": store.hook,
        "model": manifest.get("model"),
        "source": manifest.get("source"),
        "preprocess": manifest.get("preprocess"),
        **_sae_meta(sae),
    }
    return acc.finish(meta)


def compute_feature_stats_from_images(
    model: HookedModel,
    hook_name: str,
    sae: SparseAutoencoder,
    source: ImageSource,
    config: StatsConfig | None = None,
    *,
    batch_size: int = 32,
    merge_rows: int = 65536,
    device: str = "cpu",
    progress: bool = False,
) -> FeatureStats:
    """Statistics of every feature over every token of `hook_name` for every image of `source`.

    Labels come from the source's records.
    """
    model.check_hook_names([hook_name])
    layout = model.token_layout(hook_name)
    if layout.grid_hw is None:
        raise InvalidValue(f"hook {hook_name!r} has no patch grid (a pooled output): there is nothing to map")
    _check_sae(sae, layout.width, hook_name)
    acc = FeatureStatsAccumulator(sae.cfg.d_sae, layout, config)
    model = model.to(device).eval()
    loader = ImageLoader(source, model.preprocess, batch_size=batch_size)
    merger = _MergeBuffer(acc, merge_rows)
    for batch in tqdm(loader, disable=not progress, desc="feature stats", unit="batch"):
        with torch.no_grad():
            acts_BTD = model.collect(batch.pixels_BCHW.to(device), [hook_name])[hook_name]
        if not bool(torch.isfinite(acts_BTD).all()):
            image = int(batch.indices_B[torch.isfinite(acts_BTD).flatten(1).all(1).logical_not()][0])
            raise NonFiniteActivations(
                f"the model's activations at {hook_name!r} hold NaN or inf for image {image} of the source"
            )
        n_images, n_tokens, _ = acts_BTD.shape
        image_N = batch.indices_B.repeat_interleave(n_tokens)
        token_N = torch.arange(n_tokens).repeat(n_images)
        label_N = batch.labels_B.repeat_interleave(n_tokens)
        merger.add(
            *_encode(sae, acts_BTD.reshape(n_images * n_tokens, -1).float()), image_N, token_N, label_N
        )
    merger.flush()
    preprocess = getattr(model, "preprocess", None)
    meta = {
        "activations": "images",
        "hook": hook_name,
        "source": source.describe(),
        "preprocess": None if preprocess is None else config_to_dict(preprocess),
        "skipped_images": [skip.index for skip in loader.skipped],
        **_sae_meta(sae),
    }
    return acc.finish(meta)
