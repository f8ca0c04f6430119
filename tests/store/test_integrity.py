"""Damaged stores are detected, never used: a shard changed in place (same size) or a zeroed manifest
checksum stops training and `vitsae verify` with one line naming the shard and the repair, and rerunning
the harvest recomputes exactly the damaged shard (or rewrites the manifest)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from tests.helpers import shapes, tiny_vit
from tests.store.store_worker import HOOKS, N_IMAGES, config
from tests.store.test_resume import assert_same_store
from vitsae.cli import main
from vitsae.store import ActivationStore, StoreError, harvest
from vitsae.store.format import read_shard_header

SHARD = "shard-000002.safetensors"
REPAIR = "rerun the harvest command that made the store (same options and --out) to recompute it"


def flip_bit(shard: Path, tensor: str, at: int) -> None:
    """Flip one bit of byte `at` of a tensor's data in a shard file (its size stays)."""
    data = bytearray(shard.read_bytes())
    data[read_shard_header(shard)[tensor].offset + at] ^= 0x10
    shard.write_bytes(bytes(data))


@pytest.fixture
def damaged(tmp_path: Path, harvested: Path) -> Path:
    """A copy of the harvest whose second hook's shard 2 has one bit of its activation data flipped."""
    out = Path(shutil.copytree(harvested, tmp_path / "harvest"))
    flip_bit(out / HOOKS[1] / SHARD, "activations", 1000)
    return out


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_a_changed_shard_stops_reading_training_and_verify(damaged: Path, capsys) -> None:
    store = damaged / HOOKS[1]
    opened = ActivationStore.open(store)  # sizes agree: opening is cheap and passes
    opened.read_span(0, 68 * 2)  # shards 0 and 1 are intact
    with pytest.raises(StoreError, match=f"{SHARD} fails its sha256 check .*; {re.escape(REPAIR)}"):
        opened.read_span(68 * 2, 68 * 3)  # what `vitsae stats` reads
    argv = ["train", "--store", str(store), "--out", str(damaged / "sae"), "--batch-size", "16"]
    assert main([*argv, "--total-tokens", "160", "--no-progress", "--no-plot"]) == 2
    error = one_line(capsys.readouterr().err)
    assert error.startswith(f"vitsae train: error: shard {store / SHARD} fails its sha256 check")
    assert error.endswith(REPAIR)

    assert main(["verify", str(damaged), "--no-progress"]) == 1  # the harvest folder: both stores
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"ok: {damaged / HOOKS[0]}: all 6 shards have their recorded size and sha256"
    assert out[1].startswith(
        f"shard {store / SHARD} fails its sha256 check in activation rows 0-67 (block 0)"
    )
    assert out[2] == f"1 damaged shard(s); {REPAIR}"


def test_a_changed_index_tensor_stops_provenance_and_verify(tmp_path: Path, harvested: Path, capsys) -> None:
    """The training feed checks the activation blocks it reads; the rest of a shard is covered by the
    whole file's sha256, which the memory-mapped reads (provenance, stats) and `vitsae verify` check."""
    store = Path(shutil.copytree(harvested / HOOKS[0], tmp_path / "store"))
    flip_bit(store / SHARD, "token_index", 5)
    with pytest.raises(StoreError, match=f"{SHARD} fails its sha256 check \\(got"):
        ActivationStore.open(store).locate([68 * 2])
    assert main(["verify", str(store), "--no-progress"]) == 1
    assert f"shard {store / SHARD} fails its sha256 check (got" in capsys.readouterr().out


def test_harvest_rerun_recomputes_only_the_damaged_shard(damaged: Path, harvested: Path) -> None:
    untouched = damaged / HOOKS[1] / "shard-000001.safetensors"
    before = untouched.stat().st_mtime_ns
    computed = []
    model = tiny_vit()
    collect = model.collect
    model.collect = lambda pixels, names: computed.append(len(pixels)) or collect(pixels, names)
    harvest(config(damaged, N_IMAGES), model=model, source=shapes(N_IMAGES))
    assert sum(computed) == 4  # shard 2: one batch of 4 images (68 rows of 17 tokens)
    assert untouched.stat().st_mtime_ns == before
    assert_same_store(damaged, harvested)
    assert main(["verify", str(damaged / HOOKS[1]), "--no-progress"]) == 0


@pytest.mark.parametrize("field", ["sha256", "block_sha256"])
def test_a_zeroed_manifest_checksum_is_refused_and_rewritten(
    tmp_path: Path, harvested: Path, capsys, field: str
) -> None:
    out = Path(shutil.copytree(harvested, tmp_path / "harvest"))
    manifest_path = out / HOOKS[0] / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = manifest["shards"][0]
    if field == "sha256":
        entry["sha256"] = "0" * 64
    else:
        entry["block_sha256"] = ["0" * 64] * len(entry["block_sha256"])
    manifest_path.write_text(json.dumps(manifest))
    zeroed = "the manifest says 0000000000000000…\\): the shard or the manifest"
    if field == "sha256":  # what the memory-mapped reads check
        with pytest.raises(StoreError, match=zeroed):
            ActivationStore.open(out / HOOKS[0])[0]
    else:  # what the training feed checks
        with pytest.raises(
            StoreError, match=f"shard-000000.safetensors fails its sha256 check in .*{zeroed}"
        ):
            list(ActivationStore.open(out / HOOKS[0]).batches(16, epochs=1))
    assert main(["verify", str(out / HOOKS[0]), "--no-progress"]) == 1
    capsys.readouterr()
    harvest(config(out, N_IMAGES), model=tiny_vit(), source=shapes(N_IMAGES))
    assert_same_store(out, harvested)
    assert torch.equal(ActivationStore.open(out / HOOKS[0])[:], ActivationStore.open(harvested / HOOKS[0])[:])


def test_verify_names_a_missing_shard_and_refuses_a_non_store(
    tmp_path: Path, harvested: Path, capsys
) -> None:
    store = Path(shutil.copytree(harvested / HOOKS[0], tmp_path / "store"))
    (store / SHARD).unlink()
    assert main(["verify", str(store), "--no-progress"]) == 1
    assert capsys.readouterr().out.splitlines()[0] == f"shard {store / SHARD} is missing; {REPAIR}"
    assert main(["verify", str(tmp_path / "nothing"), "--no-progress"]) == 2
    assert "manifest.json is missing" in one_line(capsys.readouterr().err)


def test_blocks_are_checked_as_the_feed_reads_them(tmp_path: Path, monkeypatch) -> None:
    """With 20-row blocks (68-row shards: blocks of 20, 20, 20 and 8 rows) chunk reads that cover blocks
    partly or whole serve the right rows, and a flipped bit is named by its block on the first read."""
    monkeypatch.setattr("vitsae.store.verify.BLOCK_BYTES", 20 * 32 * 2)  # width 32, float16
    out = tmp_path / "harvest"
    harvest(config(out, N_IMAGES), model=tiny_vit(), source=shapes(N_IMAGES))
    store = ActivationStore.open(out / HOOKS[1], verify="full")
    assert (
        store.manifest["shards"][0]["block_rows"] == 20
        and len(store.manifest["shards"][0]["block_sha256"]) == 4
    )
    everything = store[:]
    for chunk in (7, 20, 40):
        fresh = ActivationStore.open(out / HOOKS[1])
        batches = fresh.batches(50, seed=1, epochs=1, chunk_rows=chunk, window_rows=3 * chunk)
        assert torch.equal(torch.cat(list(batches)), everything[batches.order.epoch_row_ids(0)])
    flip_bit(out / HOOKS[1] / SHARD, "activations", 45 * 64 + 3)  # row 45: block 2
    with pytest.raises(
        StoreError, match=f"{SHARD} fails its sha256 check in activation rows 40-59 \\(block 2\\)"
    ):
        list(ActivationStore.open(out / HOOKS[1]).batches(50, epochs=1, chunk_rows=7, window_rows=21))
