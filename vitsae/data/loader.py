"""Batched, preprocessed loading from any image source, with bad images skipped and reported.

Order is the source order (no shuffling), restricted to `[start, stop)`, so a consumer can resume at
an index or shard by rank. Images a source cannot decode (`BadImageError`, or an `OSError` such as a
file that vanished) are dropped by the collate function in the worker and reported back: every one
lands in `ImageLoader.skipped` as `SkippedImage(index, key, reason)` and is logged as a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from vitsae.data.preprocess import Preprocess
from vitsae.data.rgb import BadImageError
from vitsae.data.sources import ImageSource
from vitsae.errors import InvalidValue

log = logging.getLogger(__name__)

NO_LABEL = -1  # the label a batch holds for an unlabelled image


@dataclass(frozen=True)
class SkippedImage:
    index: int
    key: str
    reason: str


@dataclass
class ImageBatch:
    """Preprocessed pixels with the source index and label (`NO_LABEL` when none) of each image."""

    pixels_BCHW: torch.Tensor
    indices_B: torch.Tensor  # int64
    labels_B: torch.Tensor  # int64
    skipped: list[SkippedImage]  # images of this batch's index range that were dropped


class _PreprocessedItems(Dataset):
    def __init__(self, source: ImageSource, preprocess: Preprocess, start: int, stop: int) -> None:
        self.source, self.preprocess, self.start, self.stop = source, preprocess, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, offset: int) -> _Item:
        index = self.start + offset
        try:
            record = self.source[index]
            label = NO_LABEL if record.label is None else record.label
            return index, self.preprocess(record.image), label, None
        except (BadImageError, OSError) as err:
            key = self.source.key(index) if hasattr(self.source, "key") else f"#{index}"
            return index, None, NO_LABEL, SkippedImage(index, key, str(err) or type(err).__name__)


_Item = tuple[int, torch.Tensor | None, int, SkippedImage | None]  # index, pixels, label, why skipped


def _collate_dropping_bad(items: list[_Item]) -> ImageBatch:
    good = [item for item in items if item[1] is not None]
    skipped = [item[3] for item in items if item[3] is not None]
    if not good:
        return ImageBatch(
            torch.empty(0), torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64), skipped
        )
    return ImageBatch(
        pixels_BCHW=torch.stack([item[1] for item in good]),
        indices_B=torch.tensor([item[0] for item in good], dtype=torch.int64),
        labels_B=torch.tensor([item[2] for item in good], dtype=torch.int64),
        skipped=skipped,
    )


class ImageLoader:
    """Iterate `ImageBatch`es over `source[start:stop]` in order, preprocessing in worker processes."""

    def __init__(
        self,
        source: ImageSource,
        preprocess: Preprocess,
        batch_size: int = 64,
        num_workers: int = 0,
        start: int = 0,
        stop: int | None = None,
    ) -> None:
        stop = len(source) if stop is None else stop
        if not 0 <= start <= stop <= len(source):
            raise InvalidValue(f"slice [{start}, {stop}) is not within the source's {len(source)} images")
        if batch_size < 1:
            raise InvalidValue(f"batch_size must be >= 1, got {batch_size}")
        self.source, self.preprocess = source, preprocess
        self.batch_size, self.num_workers = batch_size, num_workers
        self.start, self.stop = start, stop
        self.skipped: list[SkippedImage] = []

    def __len__(self) -> int:
        """Number of index ranges (batches before skipping)."""
        return -(-(self.stop - self.start) // self.batch_size)

    def __iter__(self) -> Iterator[ImageBatch]:
        """Yield non-empty batches; `skipped` is reset at the start of each pass."""
        self.skipped = []
        loader = DataLoader(
            _PreprocessedItems(self.source, self.preprocess, self.start, self.stop),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=_collate_dropping_bad,
        )
        for batch in loader:
            for skip in batch.skipped:
                log.warning("skipped image %d (%s): %s", skip.index, skip.key, skip.reason)
            self.skipped.extend(batch.skipped)
            if len(batch.indices_B):
                yield batch


def check_has_images(source: ImageSource, preprocess: Preprocess | None = None, spec: str = "") -> int:
    """The index of the source's first usable image (decoded, and preprocessed when `preprocess` is given);
    an `InvalidValue` when it has none (empty, or every image undecodable), so a harvest refuses before it
    writes anything. Stops at the first good image."""
    name = repr(spec) if spec else "the image source"
    if len(source) == 0:
        raise InvalidValue(f"{name} holds no images; give a folder or spec with at least one image")
    items = _PreprocessedItems(source, preprocess or (lambda image: image), 0, len(source))
    reasons = []
    for offset in range(len(items)):
        index, pixels, _, skipped = items[offset]
        if pixels is not None:
            return index
        reasons.append(f"{skipped.key}: {skipped.reason}")
    raise InvalidValue(
        f"none of the {len(source)} images of {name} can be read (first: {reasons[0]}); nothing to harvest"
    )
