"""What the `edit` and `eval` commands share: loading SAEs as splice sites, picking images and classes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from vitsae.data.loader import ImageBatch, ImageLoader
from vitsae.data.sources import ImageSource
from vitsae.edit.splice import SpliceSite
from vitsae.errors import VitsaeError
from vitsae.sae.io import load_sae


class InputError(VitsaeError):
    """An SAE folder, class name or image selection that cannot be used as given."""


def load_sites(
    sae_dirs: tuple[str, ...] | list[str], device: str, stats: tuple[str, ...] = (), tokens: str | None = None
) -> list[SpliceSite]:
    """One `SpliceSite` per SAE folder (read only: nothing is written there)."""
    sites = []
    for i, directory in enumerate(sae_dirs):
        try:
            sae = load_sae(directory, device=device)
        except (FileNotFoundError, ValueError) as err:
            raise InputError(f"--sae {directory}: {err}") from None
        stats_dir = Path(stats[i]) if stats else None
        sites.append(SpliceSite(sae, tokens=tokens, stats_dir=stats_dir))
    return sites


def class_names(source: ImageSource, n_outputs: int) -> list[str]:
    """The source's class names when it has as many as the model has outputs, else "0".."C-1"."""
    names = source.describe().get("classes")
    if names and len(names) == n_outputs:
        return [str(n) for n in names]
    return [str(i) for i in range(n_outputs)]


def resolve_class(text: str, names: list[str]) -> int:
    """A class given by name or index."""
    if text in names:
        return names.index(text)
    try:
        index = int(text)
    except ValueError:
        index = -1
    if not 0 <= index < len(names):
        raise InputError(f"unknown class {text!r}; the model's classes are: {', '.join(names)}")
    return index


def image_batches(
    source: ImageSource,
    preprocess,
    n_images: int,
    batch_size: int,
    only_label: int | None = None,
) -> Callable[[], Iterator[ImageBatch]]:
    """A re-iterable selection of the first `n_images` images (of label `only_label` when given).

    The first complete pass keeps its batches in memory, so later passes (controls, ablations) replay them
    instead of decoding and preprocessing the images again.
    """
    kept_batches: list[ImageBatch] = []
    complete = [False]

    def batches() -> Iterator[ImageBatch]:
        if complete[0]:
            yield from kept_batches
            return
        kept_batches.clear()
        for batch in _select():
            kept_batches.append(batch)
            yield batch
        complete[0] = True

    def _select() -> Iterator[ImageBatch]:
        """The selected images, re-batched to `batch_size` after the class filter."""
        pending: list[ImageBatch] = []
        n_pending = kept = 0
        for batch in ImageLoader(source, preprocess, batch_size=batch_size):
            if only_label is not None:
                keep = batch.labels_B == only_label
                batch = ImageBatch(batch.pixels_BCHW[keep], batch.indices_B[keep], batch.labels_B[keep], [])
            pending.append(batch)
            n_pending += len(batch.indices_B)
            while n_pending >= batch_size or (n_pending and kept + n_pending >= n_images):
                merged = _concat(pending)
                take = min(batch_size, n_images - kept)
                yield _slice(merged, 0, take)
                kept += take
                rest = _slice(merged, take, len(merged.indices_B))
                pending, n_pending = [rest], len(rest.indices_B)
                if kept >= n_images:
                    return
        if n_pending:
            yield _concat(pending)

    return batches


def _concat(batches: list[ImageBatch]) -> ImageBatch:
    return ImageBatch(
        torch.cat([b.pixels_BCHW for b in batches]),
        torch.cat([b.indices_B for b in batches]),
        torch.cat([b.labels_B for b in batches]),
        [],
    )


def _slice(batch: ImageBatch, start: int, stop: int) -> ImageBatch:
    return ImageBatch(
        batch.pixels_BCHW[start:stop], batch.indices_B[start:stop], batch.labels_B[start:stop], []
    )


def output_width(model, preprocess) -> int:
    h, w = preprocess.size
    device = next(model.parameters()).device
    with torch.no_grad():
        return int(model(torch.zeros(1, 3, h, w, device=device)).shape[-1])
