"""Reruns of `vitsae train` (issue 11): a finished run is recognised and kept, a run killed during its final
writes finishes identically on the rerun, and a larger --total-tokens trains on from the last checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vitsae.cli import main
from vitsae.fileio import atomic_path
from vitsae.train.synthetic import sparse_dictionary_data


class Killed(BaseException):
    """Stands for a SIGKILL: not an Exception, so nothing on the way up handles it."""


@pytest.fixture
def acts(tmp_path: Path) -> Path:
    acts_ND, _ = sparse_dictionary_data(640, d=12, n_atoms=24, active=3, seed=2)
    path = tmp_path / "acts.safetensors"
    save_file({"activations": acts_ND}, str(path))
    return path


def argv(acts: Path, out: Path, tokens: int = 32 * 20) -> list[str]:
    return [
        "train", "--activations", str(acts), "--out", str(out), "--architecture", "topk", "--k", "3",
        "--expansion-factor", "2", "--lr", "3e-3", "1e-3", "--batch-size", "32",
        "--total-tokens", str(tokens), "--checkpoint-every", "10", "--log-every", "5",
        "--no-progress", "--no-plot",
    ]  # fmt: skip


def finished_files(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and "checkpoints" not in p.parts and p.name != "events"
        and "tensorboard" not in p.parts
    }  # fmt: skip


def test_rerunning_a_finished_run_prints_its_summary_and_changes_nothing(tmp_path, acts, capsys) -> None:
    out = tmp_path / "run"
    assert main(argv(acts, out)) == 0
    first = capsys.readouterr().out
    before = finished_files(out)
    sweep = json.loads((out / "sweep.json").read_text())
    assert all(summary["final_metrics"]["fvu"] > 0 for summary in sweep.values())
    assert main(argv(acts, out)) == 0  # before: KeyError 'fvu', and final_metrics {} written over the files
    again = capsys.readouterr().out
    assert "finished; nothing to do" in again
    assert first.splitlines()[-3:] == again.splitlines()[-3:]  # the same table (two runs + "saved under")
    assert finished_files(out) == before


@pytest.mark.parametrize("fail_at", ["first weights", "second weights", "first sae.json", "sweep.json"])
def test_a_kill_during_the_final_writes_reruns_to_the_same_weights_and_metrics(
    tmp_path, acts, monkeypatch, fail_at
) -> None:
    assert main(argv(acts, tmp_path / "straight")) == 0
    straight = finished_files(tmp_path / "straight")

    writes = {"n": 0}
    order = ["first weights", "first sae.json", "second weights", "second sae.json", "sweep.json"]
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):  # the rename that publishes a final file
        if Path(dst).name in ("sae.safetensors", "sae.json", "sweep.json"):
            if order[writes["n"]] == fail_at:
                raise Killed(f"killed while writing {dst}")
            writes["n"] += 1
        return real_replace(src, dst, *args, **kwargs)

    killed = tmp_path / "killed"
    monkeypatch.setattr("vitsae.fileio.os.replace", replace)
    with pytest.raises(Killed):
        main(argv(acts, killed))
    monkeypatch.setattr("vitsae.fileio.os.replace", real_replace)
    assert main(argv(acts, killed)) == 0
    resumed = finished_files(killed)
    assert resumed.keys() == straight.keys()
    for name, data in straight.items():
        if name.endswith(".safetensors"):
            a, b = load_file(tmp_path / "straight" / name), load_file(killed / name)
            assert all(torch.equal(a[k], b[k]) for k in a), name
        elif name.endswith("metrics.jsonl"):
            assert [json.loads(line)["loss"] for line in resumed[name].splitlines()] == [
                json.loads(line)["loss"] for line in data.splitlines()
            ]
    runs = json.loads(resumed["sweep.json"])
    expected = json.loads(straight["sweep.json"])
    for name, summary in expected.items():
        got = runs[name]["final_metrics"]
        assert got.keys() == summary["final_metrics"].keys()
        assert got["fvu"] == summary["final_metrics"]["fvu"] and got["l0"] == summary["final_metrics"]["l0"]
        assert (
            json.loads(resumed[f"{name}/sae.json"])["training_summary"]["final_metrics"]["fvu"] == got["fvu"]
        )
    assert not [p for p in killed.rglob("*.tmp")]


def test_a_stale_temporary_of_a_killed_writer_is_removed_by_the_next_write(tmp_path) -> None:
    target = tmp_path / "feature_stats.json"
    stale = [
        tmp_path / ".feature_stats.json.1a2b3c4d.tmp",
        tmp_path / f".feature_stats.json.{2**22 + 7}-00ff00ff.tmp",
    ]
    for path in stale:
        path.write_text("half")
    other = tmp_path / ".other.json.1a2b3c4d.tmp"
    other.write_text("another file's")
    with atomic_path(target) as tmp:
        tmp.write_text("{}")
    assert target.read_text() == "{}"
    assert not any(p.exists() for p in stale) and other.exists()


def test_more_total_tokens_trains_on_from_the_finished_run(tmp_path, acts, capsys) -> None:
    out = tmp_path / "run"
    assert main(argv(acts, out, tokens=32 * 20)) == 0
    capsys.readouterr()
    assert main(argv(acts, out, tokens=32 * 30)) == 0
    said = capsys.readouterr().out
    assert f"continuing {out} from its checkpoint at step 20" in said and "step 30" in said
    sweep = json.loads((out / "sweep.json").read_text())
    assert all(summary["steps"] == 30 and "fvu" in summary["final_metrics"] for summary in sweep.values())
    for name in sweep:
        steps = [json.loads(line)["step"] for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        assert steps == [5, 10, 15, 20, 25, 30]


def test_fewer_total_tokens_than_trained_is_one_line(tmp_path, acts, capsys) -> None:
    out = tmp_path / "run"
    assert main(argv(acts, out, tokens=32 * 20)) == 0
    capsys.readouterr()
    assert main(argv(acts, out, tokens=32 * 10)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "the checkpoint already trained 640 tokens (step 20), more than the 320 requested" in err
