"""`vitsae harvest` end to end in a subprocess: a store from the command line, and clear refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.helpers import tiny_vit
from tests.store.store_worker import HOOKS, reference_rows
from vitsae.data import ShapesDataset
from vitsae.store import ActivationStore

REPO = Path(__file__).resolve().parents[2]


def vitsae_harvest(*args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
    }  # one thread, as the in-process reference (see store_worker.one_thread)
    return subprocess.run(
        [sys.executable, "-m", "vitsae.cli", "harvest", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_harvests_and_refuses_a_different_config(tmp_path: Path) -> None:
    common = [
        "--model",
        "module:tests.helpers:tiny_vit",
        "--source",
        "shapes:10:3",
        "--out",
        str(tmp_path),
        "--batch-size",
        "4",
        "--shard-rows",
        "40",
    ]
    done = vitsae_harvest(*common, "--hooks", *HOOKS, "--progress", "false")
    assert done.returncode == 0, done.stderr[-3000:]
    store = ActivationStore.open(tmp_path / HOOKS[1], verify="full")
    assert store.manifest["model"]["spec"] == "module:tests.helpers:tiny_vit"
    assert store.manifest["source"]["config"]["seed"] == 3 and store.manifest["counts"]["images"] == 10
    expected, _, _ = reference_rows(
        tiny_vit(), ShapesDataset(n_images=10, seed=3), HOOKS[1], list(range(17)), torch.float16
    )
    assert torch.equal(store[:], expected)

    refused = vitsae_harvest(*common, "--hooks", HOOKS[0], "--dtype", "bfloat16")
    assert refused.returncode == 2
    assert "different configuration" in refused.stderr
    assert "dtype: store has 'float16', requested 'bfloat16'" in refused.stderr
    assert "hooks: store has" in refused.stderr
