"""Reading a store: random access, provenance, shuffled epochs, resumable positions, integrity checks."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import harvest_small_store, shapes
from tests.store.store_worker import HOOKS, N_IMAGES
from vitsae.store import ActivationStore, StoreError
from vitsae.store.shuffle import BatchOrder, chunk_spans

HOOK = HOOKS[1]


@pytest.fixture
def store(harvested: Path) -> ActivationStore:
    return ActivationStore.open(harvested / HOOK)


@pytest.fixture
def copy(harvested: Path, tmp_path: Path) -> Path:
    """A writable copy of one hook's store, for tampering."""
    return Path(shutil.copytree(harvested / HOOK, tmp_path / HOOK))


def test_random_access_matches_sequential(store: ActivationStore) -> None:
    everything = store[:]
    assert everything.shape == (len(store), store.d_model) == (N_IMAGES * 17, 32)
    assert everything.dtype == torch.float32
    rows = np.random.default_rng(0).integers(0, len(store), 50)
    assert torch.equal(store[rows], everything[rows])
    assert torch.equal(store[torch.from_numpy(rows)], everything[rows])
    assert torch.equal(store[7], everything[7]) and torch.equal(store[-1], everything[-1])
    assert torch.equal(store[60:130], everything[60:130]) and torch.equal(store[1:40:3], everything[1:40:3])
    assert store[[]].shape == (0, 32)
    with pytest.raises(IndexError, match="out of range"):
        store[[len(store)]]


def test_locate_and_row_of_round_trip(store: ActivationStore) -> None:
    where = store.locate(np.arange(len(store)))
    assert np.array_equal(where["image_index"], np.repeat(np.arange(N_IMAGES), 17))
    assert np.array_equal(where["token_index"], np.tile(np.arange(17), N_IMAGES))
    assert np.array_equal(where["patch_row"][:17], [-1, *np.repeat(np.arange(4), 4)])
    assert np.array_equal(where["patch_col"][:17], [-1, *np.tile(np.arange(4), 4)])
    for row in (0, 5, 16, 17, 200, len(store) - 1):
        image, token = int(where["image_index"][row]), int(where["token_index"][row])
        assert store.row_of(image, token) == row
        if token:
            patch = (int(where["patch_row"][row]), int(where["patch_col"][row]))
            assert store.row_of(image, patch=patch) == row
    with pytest.raises(KeyError, match="image 24"):
        store.row_of(N_IMAGES, 0)


def test_row_leads_back_to_its_image(store: ActivationStore) -> None:
    row = store.row_of(9, patch=(2, 1))
    assert np.array_equal(np.asarray(store.image(row)), np.asarray(shapes(N_IMAGES)[9].image))
    assert store.preprocess.size == (32, 32)


def test_every_row_once_per_epoch_and_reproducible(store: ActivationStore) -> None:
    kwargs = {"seed": 3, "chunk_rows": 16, "window_rows": 64, "epochs": 2}
    batches = list(store.batches(50, **kwargs))
    per_epoch = math.ceil(len(store) / 50)
    assert len(batches) == 2 * per_epoch and batches[per_epoch - 1].shape[0] == len(store) % 50
    order = BatchOrder(chunk_spans([68] * 6, 16), 3, True, 4)
    everything = store[:]
    for epoch in range(2):
        ids = order.epoch_row_ids(epoch)
        assert np.array_equal(np.sort(ids), np.arange(len(store)))
        assert torch.equal(torch.cat(batches[epoch * per_epoch : (epoch + 1) * per_epoch]), everything[ids])
    assert not np.array_equal(order.epoch_row_ids(0), order.epoch_row_ids(1))
    assert not np.array_equal(order.epoch_row_ids(0), np.arange(len(store)))
    again = list(store.batches(50, **kwargs))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    other = list(store.batches(50, **{**kwargs, "seed": 4}))
    assert not torch.equal(other[0], batches[0])


def test_unshuffled_reads_in_store_order(store: ActivationStore) -> None:
    batches = list(store.batches(100, shuffle=False, epochs=1, drop_last=True))
    assert len(batches) == len(store) // 100
    assert torch.equal(torch.cat(batches), store[: len(batches) * 100])


def test_position_resumes_exactly(store: ActivationStore) -> None:
    kwargs = {"seed": 1, "chunk_rows": 32, "window_rows": 96, "epochs": 3}
    straight = list(store.batches(64, **kwargs))
    first = store.batches(64, **kwargs)
    taken = []
    for batch in first:
        taken.append(batch)
        if len(taken) == 9:
            break
    assert first.position == (1, 2)  # 7 batches per epoch
    rest = list(store.batches(64, start=first.position, **kwargs))
    assert all(torch.equal(a, b) for a, b in zip(taken + rest, straight, strict=True))
    with pytest.raises(ValueError, match="outside an epoch"):
        store.batches(64, start=(0, 8))


def test_normalisation_gives_sqrt_d_mean_norm_and_undoes(harvested: Path, store: ActivationStore) -> None:
    normed = ActivationStore.open(harvested / HOOK, normalize=True)
    rows = normed[:]
    assert normed.norm_scale == pytest.approx(math.sqrt(32) / store.manifest["stats"]["mean_norm"])
    assert rows.double().norm(dim=1).mean().item() == pytest.approx(math.sqrt(32), rel=1e-5)
    torch.testing.assert_close(normed.denormalize(rows), store[:], rtol=1e-6, atol=0)
    assert torch.equal(next(iter(normed.batches(8, shuffle=False))), rows[:8])


def test_truncated_shard_is_named_on_open(copy: Path) -> None:
    shard = copy / "shard-000002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(StoreError, match="shard-000002.safetensors is .* bytes, the manifest says"):
        ActivationStore.open(copy)
    shard.unlink()
    with pytest.raises(StoreError, match="shard-000002.safetensors is missing"):
        ActivationStore.open(copy)


def test_tampered_shard_fails_sha256(copy: Path) -> None:
    shard = copy / "shard-000004.safetensors"
    data = bytearray(shard.read_bytes())
    data[-7] ^= 0x40
    shard.write_bytes(bytes(data))
    store = ActivationStore.open(copy)
    with pytest.raises(StoreError, match="shard-000004.safetensors fails its sha256 check"):
        store.verify()
    with pytest.raises(StoreError, match="shard-000004.safetensors fails its sha256 check"):
        ActivationStore.open(copy, verify="full")
    lazy = ActivationStore.open(copy, verify="lazy")
    lazy[: 68 * 4]  # shards 0-3 are intact
    with pytest.raises(StoreError, match="shard-000004.safetensors fails its sha256 check"):
        lazy[68 * 4]
    with pytest.raises(StoreError, match="shard-000004.safetensors fails"):
        list(lazy.batches(100, epochs=1))


def test_corrupt_header_and_missing_manifest(copy: Path, tmp_path: Path) -> None:
    shard = copy / "shard-000001.safetensors"
    data = bytearray(shard.read_bytes())
    data[8:12] = b"\xff\xfe\x00{"
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="shard-000001.safetensors has a corrupt safetensors header"):
        ActivationStore.open(copy, verify="size")[100]
    with pytest.raises(StoreError, match="manifest.json is missing"):
        ActivationStore.open(tmp_path)
    with pytest.raises(ValueError, match="valid: \\['size', 'lazy', 'full'\\]"):
        ActivationStore.open(copy, verify="sometimes")


def test_float32_store_batches_are_normalised_and_the_held_ones_equal(tmp_path: Path) -> None:
    plain = harvest_small_store(tmp_path)
    normed = ActivationStore.open(plain.path, normalize=True)
    batches = list(normed.batches(32, seed=1, epochs=1, chunk_rows=16, window_rows=64))
    held = list(normed.batches(32, seed=1, epochs=1, chunk_rows=16, window_rows=64, held=normed.hold()))
    assert all(torch.equal(a, b) for a, b in zip(batches, held, strict=True))
    order = BatchOrder(chunk_spans([68] * 3 + [34], 16), 1, True, 4)
    assert torch.equal(torch.cat(batches), plain[order.epoch_row_ids(0)] * normed.norm_scale)
    with pytest.raises(ValueError, match="keep_dtype batches are not normalised"):
        normed.batches(32, keep_dtype=True)
