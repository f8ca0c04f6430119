"""Training from a store: the same SAE whether the store is read from disk or held in memory, an
interrupted run resumes on the identical batches, and the hold options say what they cost or refuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import harvest_small_store, tiny_train_config
from vitsae.cli import main
from vitsae.train import Trainer
from vitsae.train.checkpoint import latest_checkpoint
from vitsae.train.data import StoreBatches


class Crash(RuntimeError):
    pass


def source(store: Path, hold: str, crash_at: int | None = None) -> StoreBatches:
    """Batches of 16 rows from small windows (16-row chunks, 48-row windows), optionally raising once
    `crash_at` batches were handed out in total (238 rows: 14 batches per epoch)."""
    batches = StoreBatches(store, 16, seed=5, hold=hold)
    batches.chunk_rows, batches.window_rows = 16, 48
    if crash_at is not None:
        plain = batches.batches

        def crashing(epoch: int, start: int):
            for offset, batch in enumerate(plain(epoch, start)):
                if epoch * 14 + start + offset == crash_at:
                    raise Crash(f"simulated crash before step {crash_at}")
                yield batch

        batches.batches = crashing
    return batches


def weights(out: Path) -> dict[str, torch.Tensor]:
    name = next(iter(json.loads((out / "sweep.json").read_text())))
    return load_file(out / name / "sae.safetensors")


def test_held_or_read_and_interrupted_or_not_train_the_same_sae(tmp_path: Path) -> None:
    store = harvest_small_store(tmp_path / "harvest").path
    cfg = tiny_train_config(total_tokens=16 * 32, checkpoint_every=10, seed=5)
    Trainer(cfg, source(store, "disk"), tmp_path / "disk").fit()
    Trainer(cfg, source(store, "ram"), tmp_path / "ram").fit()
    with pytest.raises(Crash):
        Trainer(cfg, source(store, "disk", crash_at=25), tmp_path / "resumed").fit()
    assert latest_checkpoint(tmp_path / "resumed").name == "step_000000020"
    Trainer(cfg, source(store, "ram"), tmp_path / "resumed").fit()
    straight = weights(tmp_path / "disk")
    for other in ("ram", "resumed"):
        again = weights(tmp_path / other)
        assert all(torch.equal(straight[key], again[key]) for key in straight), other


def test_hold_options_print_their_memory_or_refuse(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store = harvest_small_store(tmp_path / "harvest").path
    base = ["train", "--store", str(store), "--batch-size", "16", "--total-tokens", "64", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "ram"), "--hold", "ram", "--no-plot"]) == 0
    assert f"holding {store.resolve()} in RAM: 0.00 GiB" in capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "gpu"), "--hold", "device", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "vitsae train: error: hold 'device' needs a CUDA device (the device is cpu); use ram"
