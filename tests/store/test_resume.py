"""Interrupted harvests (Ctrl-C, kill -9) resume to the same store; a 2-rank torchrun equals 1 rank."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import shapes, tiny_vit
from tests.store.store_worker import HOOKS, N_IMAGES, SlowModel, config
from vitsae.fileio import read_json
from vitsae.store import ActivationStore, StoreError, harvest

WORKER = Path(__file__).with_name("store_worker.py")
REPO = Path(__file__).resolve().parents[2]


def assert_same_store(got: Path, want: Path) -> None:
    """Byte-identical shards and run record; manifests equal except the creation time."""
    assert (got / "harvest.json").read_bytes() == (want / "harvest.json").read_bytes()

    def files_of(store: Path) -> list[str]:
        return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())

    for hook in HOOKS:
        files = files_of(got / hook)
        assert files == files_of(want / hook)
        for name in files:  # shards and their sidecar records
            if name != "manifest.json":
                assert (got / hook / name).read_bytes() == (want / hook / name).read_bytes(), name
        manifests = [read_json(store / hook / "manifest.json") for store in (got, want)]
        for manifest in manifests:
            manifest.pop("created")
        assert manifests[0] == manifests[1]


class InterruptAfter(SlowModel):
    """Raises KeyboardInterrupt (as Ctrl-C would) on forward pass number `calls`."""

    def __init__(self, model: torch.nn.Module, calls: int) -> None:
        super().__init__(model, 0.0)
        self.calls = calls

    def collect(self, pixels_BCHW: torch.Tensor, hook_names: list[str]) -> dict[str, torch.Tensor]:
        self.calls -= 1
        if self.calls == 0:
            raise KeyboardInterrupt
        return super().collect(pixels_BCHW, hook_names)


def test_ctrl_c_then_rerun_gives_the_same_store(tmp_path: Path, harvested: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        harvest(config(tmp_path, N_IMAGES), model=InterruptAfter(tiny_vit(), 4), source=shapes(N_IMAGES))
    assert not (tmp_path / HOOKS[0] / "manifest.json").exists()
    done = sorted(p.name for p in (tmp_path / HOOKS[0] / ".progress").iterdir())
    assert done == [f"shard-00000{i}.safetensors.json" for i in range(3)]
    computed = []
    counting = InterruptAfter(tiny_vit(), -1)
    original = counting.collect

    def record(pixels_BCHW: torch.Tensor, hook_names: list[str]) -> dict[str, torch.Tensor]:
        computed.append(len(pixels_BCHW))
        return original(pixels_BCHW, hook_names)

    counting.collect = record
    stale = tmp_path / HOOKS[0] / ".shard-000003.safetensors.x1y2.tmp"  # as a kill mid-write leaves
    stale.write_bytes(b"half a shard")
    # worker processes for the images this time: a run-only option, so the harvest resumes
    harvest(config(tmp_path, N_IMAGES, num_workers=2), model=counting, source=shapes(N_IMAGES))
    assert sum(computed) == N_IMAGES - 12  # only the unfinished shards were recomputed
    assert not stale.exists()
    assert_same_store(tmp_path, harvested)


def test_rerun_recomputes_a_deleted_shard_of_a_finished_store(tmp_path: Path, harvested: Path) -> None:
    store = Path(shutil.copytree(harvested, tmp_path / "store"))
    (store / HOOKS[1] / "shard-000002.safetensors").unlink()
    with pytest.raises(StoreError, match="shard-000002.safetensors is missing; delete it and rerun"):
        ActivationStore.open(store / HOOKS[1])
    harvest(config(store, N_IMAGES), model=tiny_vit(), source=shapes(N_IMAGES))
    assert_same_store(store, harvested)
    ActivationStore.open(store / HOOKS[1], verify="full")


def test_kill_9_then_rerun_gives_the_same_store(tmp_path: Path, harvested: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), "--out", str(tmp_path), "--n-images", str(N_IMAGES), "--delay", "0.5"],
        env=env,
        cwd=REPO,
    )
    first = tmp_path / HOOKS[1] / ".progress" / "shard-000000.safetensors.json"
    deadline = time.monotonic() + 120
    while not first.exists():
        assert proc.poll() is None, "the harvest exited before its first shard landed"
        assert time.monotonic() < deadline, "no shard after 120 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (tmp_path / HOOKS[0] / "manifest.json").exists()
    harvest(config(tmp_path, N_IMAGES), model=tiny_vit(), source=shapes(N_IMAGES))
    assert_same_store(tmp_path, harvested)


def torchrun_worker(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(WORKER),
            *args,
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_two_rank_torchrun_equals_one_rank(tmp_path: Path, harvested: Path) -> None:
    result = torchrun_worker("--out", str(tmp_path), "--n-images", str(N_IMAGES))
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_store(tmp_path, harvested)


def test_ranks_with_different_models_are_refused(tmp_path: Path) -> None:
    result = torchrun_worker("--out", str(tmp_path), "--n-images", "8", "--seed-from-rank")
    assert result.returncode != 0
    assert "rank 1 loaded a different model, source or options than rank 0" in result.stderr
    assert "model_hash: rank 0 has" in result.stderr
    assert not (tmp_path / "harvest.json").exists()
