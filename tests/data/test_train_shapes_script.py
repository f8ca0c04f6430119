"""scripts/train_shapes_models.py re-creates a model bit for bit and writes a complete card."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vitsae.models.load import load

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_shapes_models.py"
TINY = ["--train-images", "64", "--eval-images", "32", "--batch-size", "32", "--eval-every", "1",
        "--threads", "1"]  # fmt: skip


def train(model: str, *out_dirs: Path, extra: tuple[str, ...] = ()) -> list[Path]:
    """Run the script once per out_dir, the runs side by side (one thread each)."""
    command = [sys.executable, str(SCRIPT), "--model", model, *TINY, *extra]
    runs = [subprocess.Popen([*command, "--out-dir", str(out)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for out in out_dirs]  # fmt: skip
    for run in runs:
        output, _ = run.communicate()
        assert run.returncode == 0, output
    return [out / f"shapes-{model}" for out in out_dirs]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["vit", "cnn"])
def test_two_runs_give_identical_weights_and_a_loadable_model(
    model: str, tmp_path: Path, monkeypatch
) -> None:  # noqa: E501
    first, second = train(model, tmp_path / "a", tmp_path / "b")
    weights = sorted(p.name for p in first.iterdir() if p.suffix == ".safetensors")
    assert weights
    for name in weights:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    card = json.loads((first / "card.json").read_text())
    assert card["continued_from"] is None and card["train_images"] == 64 and card["held_out_images"] == 32
    assert card["command"].startswith(f"python scripts/train_shapes_models.py --model {model} ")
    assert 0.0 <= card["held_out_accuracy"] <= 1.0
    monkeypatch.setenv("VITSAE_CHECKPOINTS", str(tmp_path / "a"))
    loaded = load(f"vitsae:shapes-{model}")
    assert sum(p.numel() for p in loaded.parameters()) == card["n_parameters"]


@pytest.mark.slow
def test_continued_training_keeps_the_previous_card(tmp_path: Path) -> None:
    (first,) = train("vit", tmp_path / "a")
    (continued,) = train("vit", tmp_path / "c", extra=("--init-from", str(first), "--train-seed", "1"))
    card = json.loads((continued / "card.json").read_text())
    assert card["continued_from"] == json.loads((first / "card.json").read_text())
    assert card["train_seed"] == 1
