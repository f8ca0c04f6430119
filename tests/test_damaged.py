"""Damaged files (issue 11): every manifest, shard, SAE, statistics or checkpoint file that cannot be
parsed is one `VitsaeError` line naming the file, what is wrong and how to make it again; never a raw
UnicodeDecodeError, JSONDecodeError, MemoryError or SafetensorError."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from tests.helpers import harvest_small_store, tiny_sae
from vitsae.analysis.compute import compute_feature_stats
from vitsae.analysis.logits import LogitEffects
from vitsae.analysis.stats import FeatureStats, StatsConfig
from vitsae.cli import main
from vitsae.errors import VitsaeError
from vitsae.sae.io import load_sae, save_sae
from vitsae.store import ActivationStore
from vitsae.store.format import StoreError

GARBAGE = {
    "binary": b"\xff\xfe\x00\x81 not text",
    "not json": b"{ this is not json",
    "empty": b"",
    "a list": b"[1, 2, 3]",
}


def huge_header(path: Path) -> None:
    """A safetensors file whose 8-byte header length claims about 2^60 bytes (a flipped high byte)."""
    data = bytearray(path.read_bytes())
    data[7] = 0x10
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return harvest_small_store(tmp_path_factory.mktemp("damaged")).path


@pytest.fixture
def store_copy(store_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(store_dir, tmp_path / "store"))


@pytest.mark.parametrize("garbage", GARBAGE)
def test_a_damaged_sae_json_names_the_file_and_says_retrain(tmp_path, garbage) -> None:
    save_sae(tiny_sae(), tmp_path)
    (tmp_path / "sae.json").write_bytes(GARBAGE[garbage])
    with pytest.raises(VitsaeError, match=rf"{tmp_path / 'sae.json'} is damaged: .*; retrain it") as err:
        load_sae(tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("damage", ["huge header", "garbage", "truncated"])
def test_damaged_sae_weights_name_the_file_and_say_retrain(tmp_path, damage) -> None:
    save_sae(tiny_sae(), tmp_path)
    weights = tmp_path / "sae.safetensors"
    if damage == "huge header":
        huge_header(weights)
    elif damage == "garbage":
        weights.write_bytes(GARBAGE["binary"] * 3)
    else:
        weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(
        VitsaeError, match=rf"{weights} is damaged: not a readable safetensors file .*; retrain"
    ):
        load_sae(tmp_path)


@pytest.fixture
def stats_dir(tmp_path: Path, store_dir: Path) -> Path:
    stats = compute_feature_stats(ActivationStore.open(store_dir), tiny_sae(), StatsConfig(k_images=2))
    stats.save(tmp_path / "stats")
    return tmp_path / "stats"


@pytest.mark.parametrize("garbage", GARBAGE)
def test_a_damaged_statistics_json_says_recompute(stats_dir, garbage) -> None:
    (stats_dir / "feature_stats.json").write_bytes(GARBAGE[garbage])
    with pytest.raises(
        VitsaeError, match=r"feature_stats.json is damaged: .*; recompute it: rerun the `vitsae stats`"
    ):
        FeatureStats.load(stats_dir)


def test_damaged_statistics_tensors_and_logit_effects_say_recompute(stats_dir) -> None:
    huge_header(stats_dir / "feature_stats.safetensors")
    with pytest.raises(VitsaeError, match=r"feature_stats.safetensors is damaged: .*; recompute it"):
        FeatureStats.load(stats_dir)
    (stats_dir / "logit_effects.safetensors").write_bytes(GARBAGE["binary"] * 4)
    with pytest.raises(VitsaeError, match=r"logit_effects.safetensors is damaged: .*; rerun `vitsae stats`"):
        LogitEffects.load(stats_dir)


@pytest.mark.parametrize("garbage", GARBAGE)
def test_a_damaged_manifest_names_the_file_and_the_repair(store_copy, garbage) -> None:
    (store_copy / "manifest.json").write_bytes(GARBAGE[garbage])
    with pytest.raises(
        StoreError,
        match=r"manifest.json is damaged: .*; rerun the harvest command .*: it rewrites the manifest",
    ):
        ActivationStore.open(store_copy)


def test_a_newer_store_says_upgrade(store_copy) -> None:
    manifest = store_copy / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"format_version": 1', '"format_version": 7'))
    with pytest.raises(StoreError, match="has format version 7; this vitsae reads version 1; upgrade vitsae"):
        ActivationStore.open(store_copy)


@pytest.mark.parametrize("damage", ["huge length", "binary header", "not an object"])
def test_a_damaged_shard_header_is_one_line_without_reading_exabytes(store_copy, damage) -> None:
    shard = store_copy / "shard-000001.safetensors"
    data = bytearray(shard.read_bytes())
    if damage == "huge length":
        data[7] = 0x10  # before: MemoryError reading 2^60 bytes
    elif damage == "binary header":
        data[8:12] = b"\xff\xfe\x81\x00"
    else:
        (length,) = struct.unpack("<Q", data[:8])
        data[8 : 8 + length] = b"[" + b" " * (length - 2) + b"]"
    shard.write_bytes(bytes(data))
    with pytest.raises(
        StoreError, match=r"shard-000001.safetensors .*damaged.*rerun the harvest .*: it recomputes the shard"
    ):
        ActivationStore.open(store_copy, verify="size")[100]  # the header itself, unchecked by sha256
    with pytest.raises(StoreError, match="shard-000001.safetensors fails its sha256 check"):
        ActivationStore.open(store_copy)[100]  # the default read checks the file first


def test_a_damaged_sae_through_the_command_line_is_one_line(tmp_path, store_dir, capsys) -> None:
    save_sae(tiny_sae(), tmp_path / "sae")
    huge_header(tmp_path / "sae" / "sae.safetensors")
    argv = ["stats", "--store", str(store_dir), "--sae", str(tmp_path / "sae"), "--out", str(tmp_path / "o")]
    assert main([*argv, "--no-progress", "--model", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert (
        err.startswith("vitsae stats: error: ") and "sae.safetensors is damaged" in err and "retrain" in err
    )


def test_a_damaged_training_checkpoint_says_which_folder_to_delete(tmp_path, capsys) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"activations": torch.randn(256, 8)}, str(tmp_path / "acts.safetensors"))
    argv = ["train", "--activations", str(tmp_path / "acts.safetensors"), "--out", str(tmp_path / "run")]
    argv += ["--batch-size", "32", "--total-tokens", "256", "--checkpoint-every", "4"]
    argv += ["--no-progress", "--no-plot", "--expansion-factor", "2"]
    assert main(argv) == 0
    step = max(p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith("step_"))
    (step / "trainer.json").write_bytes(GARBAGE["binary"])
    capsys.readouterr()
    assert main([*argv, "--total-tokens", "512"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{step / 'trainer.json'} is damaged: not UTF-8 text" in err
    assert f"delete {step} and rerun" in err


@pytest.mark.parametrize("key", ["hook", "shards", "stats"])
def test_a_manifest_missing_an_entry_is_damaged_not_a_key_error(store_copy, key) -> None:
    import json

    manifest = json.loads((store_copy / "manifest.json").read_text())
    del manifest[key]
    (store_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        StoreError, match=rf"manifest.json is damaged: its '{key}(.mean_norm)?' entry is missing"
    ):
        ActivationStore.open(store_copy)


def test_damaged_explorer_files_say_rerun_stats(stats_dir) -> None:
    from vitsae.analysis.images import IMAGES_META, IMAGES_TENSORS, ImageData
    from vitsae.analysis.neighbours import NEIGHBOURS_FILE, Neighbours

    (stats_dir / NEIGHBOURS_FILE).write_bytes(GARBAGE["binary"] * 4)
    with pytest.raises(VitsaeError, match=rf"{NEIGHBOURS_FILE} is damaged: .*; rerun `vitsae stats`"):
        Neighbours.load(stats_dir)
    (stats_dir / IMAGES_META).write_bytes(GARBAGE["binary"])
    with pytest.raises(VitsaeError, match=rf"{IMAGES_META} is damaged: not UTF-8 text"):
        ImageData.load(stats_dir)
    (stats_dir / IMAGES_META).write_text('{"format": "vitsae.images", "format_version": 1}')
    (stats_dir / IMAGES_TENSORS).write_bytes(GARBAGE["binary"] * 4)
    with pytest.raises(VitsaeError, match=rf"is damaged|{IMAGES_META} is not"):
        ImageData.load(stats_dir)
