"""The order in which a store's rows are served for training, and the threads that serve them.

Order: an epoch permutes fixed-size chunks of consecutive rows (seeded by `(seed, epoch)`), groups them
into windows of `chunks_per_window` chunks, and permutes the rows inside each window (seeded by
`(seed, epoch, window)`); batches are cut from the stream of windows. Every row is served exactly once
per epoch, the order depends only on (seed, epoch) and the chunk and window sizes, and batch `b` of an
epoch starts at row `b * batch_size` of that stream, so a position (epoch, batch) resumes exactly without
reading the skipped rows.

Serving (`BatchFeed`): a reader thread fills one window buffer with large sequential reads while the
other is served, so RAM holds two windows; a stager thread gathers each batch from the served window in
the stored dtype and, for a GPU, into pinned memory and on to the device with a non-blocking copy on its
own stream. Both run ahead of the consumer, so the next batches are in flight while a training step
runs. A store held whole in RAM or GPU memory (`RowSource.held`) skips the reader: its windows are lists
of row numbers into the held rows, in the same order.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from vitsae.errors import InvalidValue

Span = tuple[int, int]  # [start, stop) of global rows
# integer dtypes of the same width as each value dtype: rows are moved as raw bits and viewed at the end
RAW_DTYPES = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32}


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
    chunks_per_window: int

    def windows(self, epoch: int) -> list[list[Span]]:
        """The chunk spans read into each window of `epoch`, in reading order."""
        order = np.arange(len(self.spans))
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.spans))
        picked = [self.spans[i] for i in order]
        step = self.chunks_per_window
        return [picked[i : i + step] for i in range(0, len(picked), step)]

    def within_window(self, epoch: int, window: int, rows: int) -> np.ndarray:
        """The permutation applied to the rows of one window."""
        if not self.shuffle:
            return np.arange(rows)
        return np.random.default_rng([self.seed, epoch, window]).permutation(rows)

    def epoch_row_ids(self, epoch: int) -> np.ndarray:
        """Every global row id of `epoch` in serving order (for tests and small stores)."""
        parts = [
            span_rows(spans)[self.within_window(epoch, w, sum(hi - lo for lo, hi in spans))]
            for w, spans in enumerate(self.windows(epoch))
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def span_rows(spans: list[Span]) -> np.ndarray:
    """The global row numbers of `spans`, concatenated."""
    return np.concatenate([np.arange(lo, hi) for lo, hi in spans])


def same_batch_share(row_ids: np.ndarray, image_R: np.ndarray, batch_size: int) -> float:
    """The share of neighbouring rows of one image (rows r and r + 1 of the store, `image_R` the image
    of each row) that an epoch serving `row_ids` in that order puts in the same batch."""
    batch_of = np.empty(len(row_ids), dtype=np.int64)
    batch_of[row_ids] = np.arange(len(row_ids)) // batch_size
    pairs = image_R[1:] == image_R[:-1]
    return float((batch_of[1:] == batch_of[:-1])[pairs].mean())


@dataclass(frozen=True)
class RowSource:
    """Where a feed gets rows: `read_into(start, stop, out_RD)` reads rows [start, stop) as raw bits into
    a numpy array, or `held` is every row already in memory (raw bits, on the CPU or a GPU). `advise(start,
    stop)`, if given, is called for every chunk of a window before the first is read (readahead)."""

    width: int
    dtype: torch.dtype
    read_into: Callable[[int, int, np.ndarray], None]
    held: torch.Tensor | None = None
    advise: Callable[[int, int], None] | None = None


class WindowPool:
    """Window buffers kept between the feeds of one store, so that each epoch does not fault in fresh
    memory: a feed borrows its two buffers and gives them back when it ends (no two live feeds share one)."""

    def __init__(self) -> None:
        self._free: list[torch.Tensor] = []
        self._lock = threading.Lock()

    def borrow(self, rows: int, width: int, dtype: torch.dtype) -> torch.Tensor:
        with self._lock:
            for i, buffer in enumerate(self._free):
                if buffer.shape == (rows, width) and buffer.dtype == dtype:
                    return self._free.pop(i)
        return torch.empty(rows, width, dtype=dtype)

    def give_back(self, buffers: list[torch.Tensor]) -> None:
        with self._lock:
            self._free = (buffers + self._free)[:2]


@dataclass
class _Window:
    rows_R: np.ndarray  # rows of `data` in serving order (window-local, or global for a held store)
    data: torch.Tensor  # raw rows to gather from
    end_of_epoch: bool
    buffer: int | None  # the window buffer to hand back once served; None for a held store


_DONE = object()


class BatchFeed:
    """Batches across epochs from `start`, in `out_dtype` (None: the stored dtype) on `device`.

    `position` is (epoch, batch index) of the next batch to be yielded: save it in a checkpoint and pass it
    back as `start` to continue exactly where training stopped. `scale` multiplies float32 batches.
    """

    def __init__(
        self,
        order: BatchOrder,
        rows: RowSource,
        n_rows: int,
        batch_size: int,
        *,
        start: tuple[int, int] = (0, 0),
        epochs: int | None = None,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
        out_dtype: torch.dtype | None = torch.float32,
        scale: float | None = None,
        prefetch: int = 4,
        pool: WindowPool | None = None,
    ) -> None:
        if batch_size < 1 or prefetch < 1:
            raise InvalidValue(f"batch_size and prefetch must be >= 1, got {batch_size} and {prefetch}")
        self.order, self.rows, self.n_rows = order, rows, n_rows
        self.batch_size, self.drop_last, self.epochs, self.prefetch = batch_size, drop_last, epochs, prefetch
        self.device = torch.device(device)
        self.out_dtype, self.scale = out_dtype, scale
        self.pool = pool or WindowPool()
        self.batches_per_epoch = n_rows // batch_size if drop_last else -(-n_rows // batch_size)
        epoch, batch = start
        if not 0 <= batch <= self.batches_per_epoch or epoch < 0:
            raise InvalidValue(
                f"start position {start} is outside an epoch of {self.batches_per_epoch} batches"
            )
        self.position = (epoch + 1, 0) if batch == self.batches_per_epoch else (epoch, batch)
        self.window_rows = min(n_rows, max(1, order.chunks_per_window) * max(_longest(order.spans), 1))

    # ---- the plan -------------------------------------------------------------------------------
    def _plan(self) -> Iterator[tuple[list[Span], np.ndarray, bool]]:
        """(chunk spans, row permutation still to serve, last of its epoch) of every window from
        `position` on."""
        if self.batches_per_epoch == 0:
            return
        epoch, batch = self.position
        skip = batch * self.batch_size
        while self.epochs is None or epoch < self.epochs:
            windows = self.order.windows(epoch)
            for w, spans in enumerate(windows):
                size = sum(hi - lo for lo, hi in spans)
                if skip >= size:
                    skip -= size
                    continue
                yield spans, self.order.within_window(epoch, w, size)[skip:], w == len(windows) - 1
                skip = 0
            epoch += 1

    # ---- the threads ----------------------------------------------------------------------------
    def _read(
        self, windows: queue.Queue, free: queue.Queue, stop: threading.Event, buffers: list[torch.Tensor]
    ) -> None:
        """Fill window buffers (borrowed into `buffers`; for a held store, name its rows) in serving order.
        A window's chunks are read (and their checksums checked) by a few threads at once."""
        with ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix="feed-read") as readers:
            self._read_windows(windows, free, stop, buffers, readers)

    def _read_windows(
        self,
        windows: queue.Queue,
        free: queue.Queue,
        stop: threading.Event,
        buffers: list[torch.Tensor],
        readers: ThreadPoolExecutor,
    ) -> None:
        raw = RAW_DTYPES[self.rows.dtype]
        for spans, perm, last in self._plan():
            if self.rows.held is not None:
                item = _Window(span_rows(spans)[perm], self.rows.held, last, None)
            else:
                if len(buffers) < 2:  # two buffers: one served while the other is read
                    buffers.append(self.pool.borrow(self.window_rows, self.rows.width, raw))
                    index = len(buffers) - 1
                else:
                    index = _get(free, stop)
                    if index is None:
                        return
                if self.rows.advise is not None:
                    for lo, hi in spans:
                        self.rows.advise(lo, hi)
                buffer_RD, starts = buffers[index].numpy(), np.cumsum([0] + [hi - lo for lo, hi in spans])
                reads = [
                    readers.submit(self.rows.read_into, lo, hi, buffer_RD[at : at + hi - lo])
                    for (lo, hi), at in zip(spans, starts[:-1], strict=True)
                ]
                for read in reads:
                    read.result()
                item = _Window(perm, buffers[index], last, index)
            if not _put(windows, item, stop):
                return
        _put(windows, _DONE, stop)

    def _stage(
        self, windows: queue.Queue, free: queue.Queue, out: queue.Queue, stop: threading.Event
    ) -> None:
        """Gather batches from the windows and hand them over, on the device and in the output dtype."""
        cuda = self.device.type == "cuda"
        on_device = self.rows.held is not None and self.rows.held.device.type != "cpu"
        stream = torch.cuda.Stream(self.device) if cuda else None
        raw = RAW_DTYPES[self.rows.dtype]
        # Host batches are gathered with numpy (`take`, several times faster than torch's index_select on
        # the CPU) into one staging batch, reused: pinned and copied to the GPU, or converted by `_finish`
        # into a new tensor. Batches kept in the stored dtype on the CPU, and batches of a store held on
        # the GPU, are gathered straight into a new tensor.
        reuse = not on_device and (cuda or self.out_dtype not in (None, self.rows.dtype))
        staging = torch.empty(self.batch_size, self.rows.width, dtype=raw, pin_memory=cuda) if reuse else None

        def fresh() -> torch.Tensor:
            if staging is not None:
                return staging
            if not on_device:
                return torch.empty(self.batch_size, self.rows.width, dtype=raw)
            with torch.cuda.stream(stream):
                return torch.empty(self.batch_size, self.rows.width, dtype=raw, device=self.rows.held.device)

        def emit(batch_RD: torch.Tensor) -> bool:
            if cuda:
                with torch.cuda.stream(stream):
                    batch_RD = batch_RD.to(self.device, non_blocking=True)
                    batch = self._finish(batch_RD)
                stream.synchronize()  # this thread waits; the training step on the default stream runs on
            else:
                batch = self._finish(batch_RD)
            return _put(out, batch, stop)

        def gather(data: torch.Tensor, rows_R: np.ndarray, out_RD: torch.Tensor) -> None:
            if on_device:
                with torch.cuda.stream(stream):
                    torch.index_select(data, 0, torch.from_numpy(rows_R).to(data.device), out=out_RD)
            else:  # mode "clip": the rows are in range, and "raise" would buffer the output
                np.take(data.numpy(), rows_R, axis=0, out=out_RD.numpy(), mode="clip")

        slot, filled = fresh(), 0
        while True:
            window = _get(windows, stop)
            if window is None or window is _DONE:
                break
            pos, rows_R = 0, window.rows_R
            while pos < len(rows_R):
                take = min(self.batch_size - filled, len(rows_R) - pos)
                gather(window.data, rows_R[pos : pos + take], slot[filled : filled + take])
                filled, pos = filled + take, pos + take
                if filled == self.batch_size:
                    if not emit(slot):
                        return
                    slot, filled = fresh(), 0
            if window.buffer is not None:
                free.put(window.buffer)
            if window.end_of_epoch and filled:
                if not self.drop_last and not emit(slot[:filled]):
                    return
                slot, filled = fresh(), 0
        if window is _DONE:
            _put(out, _DONE, stop)

    def _finish(self, raw_BD: torch.Tensor) -> torch.Tensor:
        """Raw bits -> the output dtype, scaled. Never the reused staging memory: a conversion copies, and
        a batch kept in its dtype was gathered into a new tensor or copied to the GPU."""
        batch = raw_BD.view(self.rows.dtype)
        if self.out_dtype is None:
            return batch
        batch = batch.to(self.out_dtype)
        return batch.mul_(self.scale) if self.scale is not None else batch

    def __iter__(self) -> Iterator[torch.Tensor]:
        windows: queue.Queue = queue.Queue(maxsize=1)
        free: queue.Queue = queue.Queue()
        out: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        errors: list[BaseException] = []
        buffers: list[torch.Tensor] = []

        def guarded(target: Callable[..., None], *args: object) -> Callable[[], None]:
            def body() -> None:
                try:
                    target(*args)
                except BaseException as exc:  # handed to the consumer, which re-raises it
                    errors.append(exc)
                    stop.set()

            return body

        workers = [
            threading.Thread(
                target=guarded(self._read, windows, free, stop, buffers), daemon=True, name="feed-read"
            ),
            threading.Thread(
                target=guarded(self._stage, windows, free, out, stop), daemon=True, name="feed-stage"
            ),
        ]
        for worker in workers:
            worker.start()
        try:
            while True:
                item = _get(out, stop)
                if item is None:
                    if errors:
                        raise errors[0]
                    return
                if item is _DONE:
                    return
                if item.is_cuda:  # made on the feed's stream, used on the consumer's
                    item.record_stream(torch.cuda.current_stream(item.device))
                epoch, batch = self.position
                batch += 1
                if batch >= self.batches_per_epoch:
                    epoch, batch = epoch + 1, 0
                self.position = (epoch, batch)
                yield item
        finally:
            stop.set()
            for worker in workers:
                worker.join()
            self.pool.give_back(buffers)


def _longest(spans: list[Span]) -> int:
    return max((hi - lo for lo, hi in spans), default=0)


def _put(target: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put `item` unless `stop` is set first; False if stopped."""
    while not stop.is_set():
        try:
            target.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _get(source: queue.Queue, stop: threading.Event) -> object | None:
    """The next item, or None once `stop` is set and nothing is left."""
    while True:
        try:
            return source.get(timeout=0.05)
        except queue.Empty:
            if stop.is_set():
                return None
