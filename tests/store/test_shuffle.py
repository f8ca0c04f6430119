"""Property tests of the epoch order: every row once, reproducible, and resumable at any batch."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vitsae.store.shuffle import BatchOrder, chunk_spans, epoch_batches

orders = st.builds(
    lambda shard_rows, chunk, per_buffer, seed, shuffle: BatchOrder(
        chunk_spans(shard_rows, chunk), seed, shuffle, per_buffer
    ),
    st.lists(st.integers(0, 40), min_size=1, max_size=6),
    st.integers(1, 16),
    st.integers(1, 5),
    st.integers(0, 2**32 - 1),
    st.booleans(),
)


def rows_of(order: BatchOrder) -> np.ndarray:
    """A stand-in for stored rows: row i holds the value i, so a batch shows which rows it serves."""
    n_rows = order.spans[-1][1] if order.spans else 0
    return np.arange(n_rows)[:, None]


@settings(max_examples=60, deadline=None)
@given(orders, st.integers(0, 3), st.integers(1, 23), st.booleans())
def test_every_row_once_in_the_stated_order(
    order: BatchOrder, epoch: int, batch_size: int, drop_last: bool
) -> None:
    rows = rows_of(order)
    batches = list(epoch_batches(order, lambda lo, hi: rows[lo:hi], epoch, 0, batch_size, drop_last))
    served = np.concatenate(batches)[:, 0] if batches else np.zeros(0, dtype=int)
    expected = order.epoch_row_ids(epoch)
    if drop_last:
        assert all(len(b) == batch_size for b in batches)
        expected = expected[: len(rows) // batch_size * batch_size]
    else:
        assert np.array_equal(np.sort(served), np.arange(len(rows)))
    assert np.array_equal(served, expected)
    assert all(len(b) == batch_size for b in batches[:-1])


@settings(max_examples=60, deadline=None)
@given(orders, st.integers(0, 3), st.integers(1, 23), st.data())
def test_resuming_at_any_batch_continues_the_same_stream(
    order: BatchOrder, epoch: int, batch_size: int, data: st.DataObject
) -> None:
    rows = rows_of(order)
    read = lambda lo, hi: rows[lo:hi]  # noqa: E731
    whole = list(epoch_batches(order, read, epoch, 0, batch_size, False))
    start = data.draw(st.integers(0, len(whole)))
    resumed = list(epoch_batches(order, read, epoch, start, batch_size, False))
    assert len(resumed) == len(whole) - start
    assert all(np.array_equal(a, b) for a, b in zip(resumed, whole[start:], strict=True))


@given(orders)
def test_order_depends_only_on_seed_and_epoch(order: BatchOrder) -> None:
    twin = BatchOrder(list(order.spans), order.seed, order.shuffle, order.chunks_per_buffer)
    assert np.array_equal(order.epoch_row_ids(2), twin.epoch_row_ids(2))
