"""The one error boundary of `vitsae`: every bad option or input is one line and exit 2, never a traceback."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vitsae.analysis.checkpoint import CheckpointMismatch
from vitsae.cli import describe_os_error, main
from vitsae.data.rgb import BadImageError
from vitsae.errors import InvalidValue, MissingFile, MissingKey, VitsaeError
from vitsae.store.format import StoreError
from vitsae.train.trainer import TrainingDiverged

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def acts_file(tmp_path: Path) -> Path:
    path = tmp_path / "acts.safetensors"
    save_file({"activations": torch.randn(256, 8)}, str(path))
    return path


def train_argv(acts_file: Path, out: Path, *options: str) -> list[str]:
    small = ["--batch-size", "64", "--total-tokens", "128", "--no-progress", "--no-plot", "--device", "cpu"]
    return ["train", "--activations", str(acts_file), "--out", str(out), *small, *options]


def one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"vitsae {command}: error: "), err
    return lines[0]


def test_every_project_exception_is_a_vitsae_error() -> None:
    for kind in (StoreError, BadImageError, CheckpointMismatch, TrainingDiverged, InvalidValue, MissingFile):
        assert issubclass(kind, VitsaeError)
    # the built-in kinds raised before still catch them
    assert issubclass(InvalidValue, ValueError) and issubclass(CheckpointMismatch, ValueError)
    assert issubclass(MissingFile, FileNotFoundError) and issubclass(TrainingDiverged, RuntimeError)
    assert str(MissingKey("x has no tensor 'a'")) == "x has no tensor 'a'"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--batch-size", "0"], r"need 0 < batch_size \(0\)"),
        (["--batch-size", "-4"], r"need 0 < batch_size \(-4\)"),
        (["--total-tokens", "0"], r"<= total_tokens \(0\)"),
        (["--checkpoint-every", "0"], r"checkpoint_every \(--checkpoint-every\) must be >= 1, got 0"),
        (["--architecture", "topk", "--k", "1000"], r"--k 1000 is above the dictionary size 64"),
        (["--architecture", "topk", "--k", "0"], r"k \(--k\) must be >= 1, got 0"),
        (["--expansion-factor", "0"], r"expansion_factor \(--expansion-factor\) must be >= 1, got 0"),
        (["--lr", "-1"], r"lr \(--lr\) must be > 0, got -1"),
    ],
)
def test_bad_train_options_are_one_line(tmp_path, capsys, acts_file, options, message) -> None:
    assert main(train_argv(acts_file, tmp_path / "out", *options)) == 2
    line = one_error_line(capsys.readouterr().err, "train")
    assert re.search(message, line), line


def test_k_above_the_dictionary_exits_2_in_a_fresh_process(tmp_path, acts_file) -> None:
    """Before the boundary this was a ValueError traceback (exit 1 here; issue 11 saw exit 134 on a store)."""
    argv = train_argv(acts_file, tmp_path / "out", "--architecture", "topk", "--k", "1000")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "vitsae.cli", *argv], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "above the dictionary size" in one_error_line(done.stderr, "train")


def test_output_that_is_a_file_or_unwritable(tmp_path, capsys, acts_file, monkeypatch) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    assert main(train_argv(acts_file, blocker)) == 2
    assert f"the output folder {blocker} is a file" in one_error_line(capsys.readouterr().err, "train")
    assert main(["stats", "--store", str(tmp_path), "--sae", str(tmp_path), "--out", str(blocker)]) == 2
    assert f"the output folder {blocker} is a file" in one_error_line(capsys.readouterr().err, "stats")
    harvest = ["harvest", "--model", "vitsae:shapes-vit", "--source", "shapes:4", "--hooks", "x"]
    assert main([*harvest, "--out", str(blocker)]) == 2
    assert f"the output folder {blocker} is a file" in one_error_line(capsys.readouterr().err, "harvest")

    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "touch", refuse)
    assert main(train_argv(acts_file, tmp_path / "ro")) == 2
    line = one_error_line(capsys.readouterr().err, "train")
    assert f"cannot write the output folder {tmp_path / 'ro'}: Permission denied" in line


def test_missing_inputs_name_the_path(tmp_path, capsys) -> None:
    assert main(["train", "--activations", str(tmp_path / "none.safetensors"), "--out", str(tmp_path)]) == 2
    assert str(tmp_path / "none.safetensors") in one_error_line(capsys.readouterr().err, "train")
    assert main(["train", "--out", str(tmp_path / "o")]) == 2
    assert "--store DIR or --activations FILE" in one_error_line(capsys.readouterr().err, "train")
    assert main(["hooks", f"hf:{tmp_path / 'no_model'}"]) == 2
    assert "no such directory" in one_error_line(capsys.readouterr().err, "hooks")
    harvest = ["harvest", "--model", "vitsae:shapes-vit", "--hooks", "x", "--out", str(tmp_path / "h")]
    assert main([*harvest, "--source", "shapes:-5"]) == 2
    line = one_error_line(capsys.readouterr().err, "harvest")
    assert "number of shapes images must be >= 0, got -5" in line and "ShapesConfig(" not in line
    source = f"hf:{tmp_path / 'no_data'}"
    assert main([*harvest, "--source", source]) == 2
    assert "no such directory" in one_error_line(capsys.readouterr().err, "harvest")


def test_bad_browse_labels_are_one_line(tmp_path, capsys, monkeypatch) -> None:
    from vitsae.report import cli as report_cli

    monkeypatch.setattr(report_cli.FeatureStats, "load", lambda path: None)
    for text in ("not json", "[1, 2]", '{"x": "label"}'):
        (tmp_path / "labels.json").write_text(text)
        argv = ["browse", "--stats", str(tmp_path), "--out", str(tmp_path / "b"), "--no-images"]
        assert main([*argv, "--labels", str(tmp_path / "labels.json")]) == 2
        assert "is not a JSON object of feature ids to labels" in one_error_line(
            capsys.readouterr().err, "browse"
        )


def test_debug_shows_the_traceback(tmp_path, acts_file, monkeypatch) -> None:
    with pytest.raises(InvalidValue, match="batch_size"):
        main(["--debug", *train_argv(acts_file, tmp_path / "out", "--batch-size", "0")])
    with pytest.raises(InvalidValue, match="batch_size"):
        main([*train_argv(acts_file, tmp_path / "out", "--batch-size", "0"), "--debug"])
    monkeypatch.setenv("VITSAE_DEBUG", "1")
    with pytest.raises(InvalidValue, match="batch_size"):
        main(train_argv(acts_file, tmp_path / "out", "--batch-size", "0"))


def test_a_full_disk_during_a_command_names_the_folder(tmp_path, capsys, acts_file, monkeypatch) -> None:
    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("vitsae.train.cli.Trainer.fit", full)
    assert main(train_argv(acts_file, tmp_path / "out")) == 2
    line = one_error_line(capsys.readouterr().err, "train")
    assert f"no space left on the device holding {tmp_path / 'out'} (" in line


def test_disk_errors_name_the_path(tmp_path) -> None:
    full = describe_os_error(OSError(errno.ENOSPC, "No space left on device"), out=tmp_path)
    assert full.startswith(f"no space left on the device holding {tmp_path} (") and "MiB free" in full
    denied = describe_os_error(PermissionError(errno.EACCES, "Permission denied", "/x/y"))
    assert denied == "Permission denied: /x/y; choose a writable folder or fix its permissions"


def test_booleans_are_flags_with_a_no_form(capsys) -> None:
    for command in ("harvest", "train", "stats"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--progress, --no-progress" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["harvest", "--help"])
    assert "--include-registers, --no-include-registers" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["browse", "--help"])
    out = capsys.readouterr().out
    assert "--no-images" in out and "--no-no-images" not in out
