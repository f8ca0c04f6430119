"""The order in which a store's rows are served for training, and a prefetching batch iterator.

An epoch permutes fixed-size chunks of consecutive rows (seeded by `(seed, epoch)`), reads a buffer
of `buffer_rows // chunk_rows` chunks with sequential reads, permutes the rows inside the buffer
(seeded by `(seed, epoch, buffer)`), and cuts batches from the stream of buffers. Every row is
served exactly once per epoch, the order depends only on (seed, epoch), and batch `b` of an epoch
starts at row `b * batch_size` of that stream, so a position (epoch, batch) resumes exactly without
reading the skipped rows.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from vitsae.errors import InvalidValue

Span = tuple[int, int]  # [start, stop) of global rows


def chunk_spans(shard_rows: list[int], chunk_rows: int) -> list[Span]:
    """Cut every shard into chunks of at most `chunk_rows` rows (chunks never cross shards)."""
    spans, start = [], 0
    for rows in shard_rows:
        stop = start + rows
        spans.extend((lo, min(lo + chunk_rows, stop)) for lo in range(start, stop, chunk_rows))
        start += rows
    return spans


@dataclass(frozen=True)
class BatchOrder:
    """The deterministic order of rows in each epoch."""

    spans: list[Span]
    seed: int
    shuffle: bool
    chunks_per_buffer: int

    def buffers(self, epoch: int) -> list[list[Span]]:
        """The chunk spans read into each buffer of `epoch`, in reading order."""
        order = np.arange(len(self.spans))
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.spans))
        picked = [self.spans[i] for i in order]
        return [picked[i : i + self.chunks_per_buffer] for i in range(0, len(picked), self.chunks_per_buffer)]

    def within_buffer(self, epoch: int, buffer: int, rows: int) -> np.ndarray:
        """The permutation applied to the rows of one buffer."""
        if not self.shuffle:
            return np.arange(rows)
        return np.random.default_rng([self.seed, epoch, buffer]).permutation(rows)

    def epoch_row_ids(self, epoch: int) -> np.ndarray:
        """Every global row id of `epoch` in serving order (for tests and small stores)."""
        parts = []
        for b, spans in enumerate(self.buffers(epoch)):
            ids = np.concatenate([np.arange(lo, hi) for lo, hi in spans])
            parts.append(ids[self.within_buffer(epoch, b, len(ids))])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def epoch_batches(
    order: BatchOrder,
    read_span: Callable[[int, int], np.ndarray],
    epoch: int,
    start_batch: int,
    batch_size: int,
    drop_last: bool,
) -> Iterator[np.ndarray]:
    """Batches (stored dtype, numpy) of one epoch from batch `start_batch` on."""
    skip = start_batch * batch_size
    carry: list[np.ndarray] = []
    carried = 0
    for b, spans in enumerate(order.buffers(epoch)):
        size = sum(hi - lo for lo, hi in spans)
        if skip >= size:
            skip -= size
            continue
        buffer_RD = np.concatenate([read_span(lo, hi) for lo, hi in spans])
        buffer_RD = buffer_RD[order.within_buffer(epoch, b, size)[skip:]]
        skip = 0
        pos = 0
        if carried:
            take = min(batch_size - carried, len(buffer_RD))
            carry.append(buffer_RD[:take])
            carried += take
            pos = take
            if carried < batch_size:
                continue
            yield np.concatenate(carry)
            carry, carried = [], 0
        while pos + batch_size <= len(buffer_RD):
            yield buffer_RD[pos : pos + batch_size]
            pos += batch_size
        if pos < len(buffer_RD):
            carry, carried = [buffer_RD[pos:]], len(buffer_RD) - pos
    if carried and not drop_last:
        yield np.concatenate(carry)


_DONE = object()


class ShuffledBatches:
    """Iterates float32 batches across epochs with a background prefetch thread.

    `position` is (epoch, batch index) of the next batch to be yielded: save it in a checkpoint and pass
    it back as `start` to continue exactly where training stopped.
    """

    def __init__(
        self,
        order: BatchOrder,
        read_span: Callable[[int, int], np.ndarray],
        to_tensor: Callable[[np.ndarray], torch.Tensor],
        n_rows: int,
        batch_size: int,
        start: tuple[int, int],
        epochs: int | None,
        drop_last: bool,
        prefetch: int,
    ) -> None:
        if batch_size < 1 or prefetch < 1:
            raise InvalidValue(f"batch_size and prefetch must be >= 1, got {batch_size} and {prefetch}")
        self._order, self._read_span, self._to_tensor = order, read_span, to_tensor
        self.batch_size, self.drop_last, self.epochs, self.prefetch = batch_size, drop_last, epochs, prefetch
        self.batches_per_epoch = n_rows // batch_size if drop_last else -(-n_rows // batch_size)
        epoch, batch = start
        if not 0 <= batch <= self.batches_per_epoch or epoch < 0:
            raise InvalidValue(
                f"start position {start} is outside an epoch of {self.batches_per_epoch} batches"
            )
        self.position = (epoch + 1, 0) if batch == self.batches_per_epoch else (epoch, batch)

    def _positions(self) -> Iterator[tuple[int, int]]:
        epoch, batch = self.position
        while self.epochs is None or epoch < self.epochs:
            if self.batches_per_epoch == 0:
                return
            yield epoch, batch
            epoch, batch = epoch + 1, 0

    def _produce(self, out: queue.Queue, stop: threading.Event) -> None:
        def put(item: object) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            for epoch, batch in self._positions():
                for batch_RD in epoch_batches(
                    self._order, self._read_span, epoch, batch, self.batch_size, self.drop_last
                ):
                    if not put(self._to_tensor(batch_RD)):
                        return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)

    def __iter__(self) -> Iterator[torch.Tensor]:
        out: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        worker = threading.Thread(target=self._produce, args=(out, stop), daemon=True, name="store-prefetch")
        worker.start()
        try:
            while True:
                item = out.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                epoch, batch = self.position
                batch += 1
                if batch >= self.batches_per_epoch:
                    epoch, batch = epoch + 1, 0
                self.position = (epoch, batch)
                yield item
        finally:
            stop.set()
            worker.join()
