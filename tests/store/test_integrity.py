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

SHARD = "shard-000002.safetensors"
REPAIR = "rerun the harvest command that made the store (same options and --out) to recompute it"


@pytest.fixture
def damaged(tmp_path: Path, harvested: Path) -> Path:
    """A copy of the harvest whose second hook's shard 2 has one bit of its activation data flipped."""
    out = Path(shutil.copytree(harvested, tmp_path / "harvest"))
    shard = out / HOOKS[1] / SHARD
    data = bytearray(shard.read_bytes())
    data[-300] ^= 0x10
    shard.write_bytes(bytes(data))
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
    assert out[1].startswith(f"shard {store / SHARD} fails its sha256 check")
    assert out[2] == f"1 damaged shard(s); {REPAIR}"


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


def test_a_zeroed_manifest_checksum_is_refused_and_rewritten(tmp_path: Path, harvested: Path, capsys) -> None:
    out = Path(shutil.copytree(harvested, tmp_path / "harvest"))
    manifest_path = out / HOOKS[0] / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["shards"][0]["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="the manifest says 0000000000000000…\\): the shard or the manifest"):
        ActivationStore.open(out / HOOKS[0])[0]
    with pytest.raises(StoreError, match="shard-000000.safetensors fails its sha256 check"):
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
