"""Inputs that would give meaningless results are refused (issue 11): non-finite activations stop `vitsae
stats` naming the shard and row; an image source without a usable image is refused before anything is
written."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import harvest_small_store, tiny_sae
from vitsae.analysis.compute import NonFiniteActivations, compute_feature_stats
from vitsae.analysis.stats import StatsConfig
from vitsae.cli import main
from vitsae.fileio import sha256_file
from vitsae.sae.io import save_sae
from vitsae.store import ActivationStore
from vitsae.store.format import read_shard_header


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return harvest_small_store(tmp_path_factory.mktemp("bad")).path


def poison(store_dir: Path, out: Path, shard: int, row: int, value: float) -> Path:
    """A copy of the store with `value` written into one activation of `row` of shard `shard` (the manifest's
    size and sha256 updated, as if the model had produced it)."""
    shutil.copytree(store_dir, out)
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["shards"][shard]
    path = out / entry["file"]
    acts = read_shard_header(path)["activations"]
    data = bytearray(path.read_bytes())
    start = acts.offset + (row * acts.shape[1] + 3) * 4
    data[start : start + 4] = np.float32(value).tobytes()
    path.write_bytes(bytes(data))
    entry["sha256"] = sha256_file(path)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_stats_stop_at_a_non_finite_row_naming_shard_and_row(tmp_path, store_dir, value) -> None:
    """Before: inf went into act_sum_F, max_act_F and the samples, NaN rows were dropped, exit 0."""
    store = ActivationStore.open(poison(store_dir, tmp_path / "store", shard=2, row=5, value=value))
    global_row = sum(e["rows"] for e in store.manifest["shards"][:2]) + 5
    image, token = (int(v[0]) for v in store.provenance(np.array([global_row])))
    kind = "NaN" if math.isnan(value) else "inf"
    with pytest.raises(NonFiniteActivations) as err:
        compute_feature_stats(store, tiny_sae(), StatsConfig(k_images=2), batch_rows=50)
    message = str(err.value)
    assert (
        f"row {global_row} of {store.path} (shard shard-000002.safetensors row 5, image {image}, " in message
    )
    assert f"token {token}) holds {kind} activations" in message

    save_sae(tiny_sae(), tmp_path / "sae")
    argv = ["stats", "--store", str(store.path), "--sae", str(tmp_path / "sae"), "--out", str(tmp_path / "o")]
    assert main([*argv, "--no-progress", "--model", "none"]) == 2
    assert not (tmp_path / "o" / "feature_stats.json").exists()


def harvest_argv(source: str, out: Path) -> list[str]:
    hooks = ["--hooks", "blocks.0.hook_resid_post"]
    return [
        "harvest",
        "--model",
        "vitsae:shapes-vit",
        "--source",
        source,
        *hooks,
        "--out",
        str(out),
        "--no-progress",
    ]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and lines[0].startswith("vitsae harvest: error: "), err
    return lines[0]


def test_sources_without_a_usable_image_are_refused_before_anything_is_written(tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("a.png", "b.jpg"):
        (bad / name).write_bytes(b"\x89PNG not really an image")
    for source, message in [
        ("shapes:0", "'shapes:0' holds no images"),
        (str(empty), "holds no images"),
        (str(bad), "none of the 2 images of"),
    ]:
        out = tmp_path / f"out_{Path(source).name}"
        assert main(harvest_argv(source, out)) == 2
        assert message in one_line(capsys.readouterr().err)
        assert not out.exists()  # before: a 0-row store, exit 0


class Killed(BaseException):
    """Stands for a SIGKILL during a write."""


def test_stats_rerun_after_a_kill_in_its_final_write_leaves_no_temporary(tmp_path, store_dir, monkeypatch):
    import os
    import subprocess

    save_sae(tiny_sae(), tmp_path / "sae")
    out = tmp_path / "stats"
    argv = ["stats", "--store", str(store_dir), "--sae", str(tmp_path / "sae"), "--out", str(out)]
    argv += ["--no-progress", "--model", "none"]
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == "feature_stats.json":
            raise Killed
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr("vitsae.fileio.os.replace", replace)
    with pytest.raises(Killed):
        main(argv)
    monkeypatch.setattr("vitsae.fileio.os.replace", real_replace)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / f".feature_stats.json.{dead.pid}-0a1b2c3d.tmp").write_text("{half")  # what a SIGKILL leaves
    (out / ".feature_stats.json.0a1b2c3d.tmp").write_text("{half")  # the same, from an older vitsae
    assert main(argv) == 0
    assert json.loads((out / "feature_stats.json").read_text())["format"] == "vitsae.feature_stats"
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []
