"""Property tests of the epoch order and of the feed that serves it: every row once, reproducible,
resumable at any batch, the same from disk reads and from a held store, and rows of one image spread
over many batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vitsae.store.shuffle import BatchFeed, BatchOrder, RowSource, chunk_spans, same_batch_share

orders = st.builds(
    lambda shard_rows, chunk, per_window, seed, shuffle: BatchOrder(
        chunk_spans(shard_rows, chunk), seed, shuffle, per_window
    ),
    st.lists(st.integers(0, 40), min_size=1, max_size=6),
    st.integers(1, 16),
    st.integers(1, 5),
    st.integers(0, 2**32 - 1),
    st.booleans(),
)


def n_rows(order: BatchOrder) -> int:
    return order.spans[-1][1] if order.spans else 0


def id_rows(order: BatchOrder, held: bool) -> RowSource:
    """Stand-in rows: row i holds the value i (float32), read from "disk" or held in memory."""
    values_N1 = np.arange(n_rows(order), dtype=np.float32)[:, None]

    def read_into(lo: int, hi: int, out_RD: np.ndarray) -> None:
        out_RD[:] = values_N1[lo:hi].view(np.int32)

    held_N1 = torch.from_numpy(values_N1.view(np.int32).copy()) if held else None
    return RowSource(1, torch.float32, read_into, held_N1)


def served(order: BatchOrder, batch_size: int, held: bool, **kwargs: object) -> list[np.ndarray]:
    feed = BatchFeed(order, id_rows(order, held), n_rows(order), batch_size, **kwargs)
    return [b[:, 0].numpy().astype(np.int64) for b in feed]


@settings(max_examples=40, deadline=None)
@given(orders, st.integers(0, 3), st.integers(1, 23), st.booleans(), st.booleans())
def test_every_row_once_in_the_stated_order(
    order: BatchOrder, epoch: int, batch_size: int, drop_last: bool, held: bool
) -> None:
    batches = served(order, batch_size, held, start=(epoch, 0), epochs=epoch + 1, drop_last=drop_last)
    rows = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
    expected = order.epoch_row_ids(epoch)
    if drop_last:
        assert all(len(b) == batch_size for b in batches)
        expected = expected[: n_rows(order) // batch_size * batch_size]
    else:
        assert np.array_equal(np.sort(rows), np.arange(n_rows(order)))
    assert np.array_equal(rows, expected)
    assert all(len(b) == batch_size for b in batches[:-1])


@settings(max_examples=40, deadline=None)
@given(orders, st.integers(0, 2), st.integers(1, 23), st.data())
def test_resuming_at_any_batch_continues_the_same_stream(
    order: BatchOrder, epoch: int, batch_size: int, data: st.DataObject
) -> None:
    whole = served(order, batch_size, False, start=(epoch, 0), epochs=epoch + 2)
    per_epoch = -(-n_rows(order) // batch_size)
    start = data.draw(st.integers(0, per_epoch))
    resumed = served(order, batch_size, data.draw(st.booleans()), start=(epoch, start), epochs=epoch + 2)
    assert len(resumed) == len(whole) - start
    assert all(np.array_equal(a, b) for a, b in zip(resumed, whole[start:], strict=True))


@given(orders)
def test_order_depends_only_on_seed_and_epoch(order: BatchOrder) -> None:
    twin = BatchOrder(list(order.spans), order.seed, order.shuffle, order.chunks_per_window)
    assert np.array_equal(order.epoch_row_ids(2), twin.epoch_row_ids(2))


def test_position_counts_batches_across_epochs() -> None:
    order = BatchOrder(chunk_spans([30, 12], 8), 0, True, 2)
    feed = BatchFeed(order, id_rows(order, False), 42, 10, epochs=3)
    for i, _ in enumerate(feed):
        if i == 6:
            break
    assert feed.position == (1, 2)  # 5 batches per epoch
    with pytest.raises(ValueError, match="outside an epoch"):
        BatchFeed(order, id_rows(order, False), 42, 10, start=(0, 6))


def test_a_failing_read_reaches_the_consumer() -> None:
    order = BatchOrder(chunk_spans([40], 8), 0, True, 2)

    def broken(lo: int, hi: int, out_RD: np.ndarray) -> None:
        raise OSError(f"cannot read rows {lo}:{hi}")

    with pytest.raises(OSError, match="cannot read rows"):
        list(BatchFeed(order, RowSource(1, torch.float32, broken), 40, 4))


# A store of ViT-B shape: 197 tokens per image, 768-wide float16 rows, 16,384-row shards.
TOKENS, ROW_BYTES, SHARD = 197, 768 * 2, 16384


def vit_b_order(images: int, chunk_mib: int, window_mib: int, seed: int = 0) -> tuple[BatchOrder, np.ndarray]:
    rows = images * TOKENS
    chunk = (chunk_mib << 20) // ROW_BYTES
    shards = [SHARD] * (rows // SHARD) + [rows % SHARD]
    order = BatchOrder(
        chunk_spans(shards, chunk), seed, True, max(1, (window_mib << 20) // (chunk * ROW_BYTES))
    )
    return order, np.arange(rows) // TOKENS


@pytest.mark.parametrize(("chunk_mib", "window_mib", "batch"), [(4, 512, 4096), (4, 64, 4096), (1, 16, 1024)])
def test_rows_of_one_image_land_in_different_batches(chunk_mib: int, window_mib: int, batch: int) -> None:
    """Two neighbouring rows of one image share a batch about as often as batch / window rows predicts
    (a sequential read: always, but at batch edges), measured over two epochs of a 6,000-image store."""
    order, image_R = vit_b_order(6000, chunk_mib, window_mib)
    window_rows = order.chunks_per_window * (order.spans[0][1] - order.spans[0][0])
    for epoch in range(2):
        share = same_batch_share(order.epoch_row_ids(epoch), image_R, batch)
        assert share < 1.5 * batch / window_rows
    sequential = BatchOrder(order.spans, 0, False, order.chunks_per_window)
    assert same_batch_share(sequential.epoch_row_ids(0), image_R, batch) > 0.9
