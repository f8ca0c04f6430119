"""Interrupted training resumes from its last checkpoint and continues the identical trajectory."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import DYING_FEATURES, tiny_train_config
from vitsae.cli import main
from vitsae.train import TensorBatches, TrainConfig, Trainer
from vitsae.train.checkpoint import latest_checkpoint
from vitsae.train.synthetic import sparse_dictionary_data


class Crash(RuntimeError):
    pass


def crashing(source: TensorBatches, crash_at_step: int):
    """A batch factory that raises once `crash_at_step` batches have been handed out in total."""
    per_epoch = len(source)

    def factory(epoch: int, start_batch: int):
        for offset, batch in enumerate(source.batches(epoch, start_batch)):
            if epoch * per_epoch + start_batch + offset == crash_at_step:
                raise Crash(f"simulated crash before step {crash_at_step}")
            yield batch

    return factory


def assert_same_saes(straight_dir: Path, resumed_dir: Path) -> list[str]:
    """The runs of the sweep in `straight_dir`, once each run's SAE in `resumed_dir` is checked to hold the
    same tensors to the bit."""
    names = list(json.loads((straight_dir / "sweep.json").read_text()))
    for name in names:
        straight = load_file(straight_dir / name / "sae.safetensors")
        resumed = load_file(resumed_dir / name / "sae.safetensors")
        assert straight.keys() == resumed.keys()
        for key in straight:
            assert torch.equal(straight[key], resumed[key]), (name, key)
    return names


def straight_and_resumed(
    cfg: TrainConfig, source: TensorBatches, root: Path, crash_at_step: int
) -> list[str]:
    """Train `cfg` uninterrupted under root/straight, and crashed before `crash_at_step` then resumed under
    root/resumed; the run names, once each run's two SAEs are checked to be the same to the bit."""
    Trainer(cfg, source, root / "straight").fit()
    with pytest.raises(Crash):
        Trainer(cfg, crashing(source, crash_at_step), root / "resumed").fit()
    Trainer(cfg, source, root / "resumed").fit()
    return assert_same_saes(root / "straight", root / "resumed")


def config(architecture: str, dead_handling: str, backend: str = "auto") -> TrainConfig:
    return tiny_train_config(
        **DYING_FEATURES,
        architecture=architecture,
        l1_coefficient=(6.0,),
        total_tokens=64 * 30,
        lr_warmup_steps=5,
        lr_decay="cosine",
        lr_decay_start=0.5,
        l1_warmup_steps=10,
        dead_handling=dead_handling,
        resample_every=4,
        log_every=4,
        checkpoint_every=10,
        backend=backend,
    )


@pytest.mark.parametrize(
    ("architecture", "dead_handling", "backend"),
    [
        ("relu", "resample", "dense"),
        ("batchtopk", "auxk", "dense"),
        ("jumprelu", "none", "dense"),
        ("relu", "resample", "sparse"),
        ("topk", "auxk", "sparse"),
        ("batchtopk", "auxk", "sparse"),
    ],
)
def test_resume_after_crash_matches_uninterrupted_run(tmp_path, architecture, dead_handling, backend):
    acts, _ = sparse_dictionary_data(640, d=12, n_atoms=24, active=3, seed=1)
    source = TensorBatches(acts, 64, seed=3)  # 10 batches per epoch: the run spans 3 epochs
    cfg = config(architecture, dead_handling, backend)

    Trainer(cfg, source, tmp_path / "straight").fit()

    with pytest.raises(Crash):
        Trainer(cfg, crashing(source, 25), tmp_path / "resumed").fit()
    assert latest_checkpoint(tmp_path / "resumed").name == "step_000000020"
    Trainer(cfg, source, tmp_path / "resumed").fit()

    run_names = assert_same_saes(tmp_path / "straight", tmp_path / "resumed")
    assert len(run_names) == 2
    for name in run_names:
        lines = (tmp_path / "resumed" / name / "metrics.jsonl").read_text().splitlines()
        steps = [json.loads(line)["step"] for line in lines]
        assert steps == [4, 8, 12, 16, 20, 24, 28, 30]
        straight_lines = (tmp_path / "straight" / name / "metrics.jsonl").read_text().splitlines()
        for a, b in zip(lines, straight_lines, strict=True):
            ra, rb = json.loads(a), json.loads(b)
            assert ra["loss"] == rb["loss"] and ra["density_histogram"] == rb["density_histogram"]
    records = [
        json.loads(line)
        for name in run_names
        for line in (tmp_path / "resumed" / name / "metrics.jsonl").read_text().splitlines()
    ]
    if dead_handling == "resample":  # the revival paths were exercised across the crash
        assert max(r["resampled"] for r in records) > 0
    if dead_handling == "auxk":
        assert max(r["auxk_loss"] for r in records) > 0


def test_rerunning_a_finished_run_changes_nothing(tmp_path):
    acts, _ = sparse_dictionary_data(640, d=12, n_atoms=24, seed=1)
    cfg = config("topk", "auxk")
    Trainer(cfg, TensorBatches(acts, 64), tmp_path).fit()
    name = next(iter(json.loads((tmp_path / "sweep.json").read_text())))
    before = load_file(tmp_path / name / "sae.safetensors")
    Trainer(cfg, TensorBatches(acts, 64), tmp_path).fit()
    after = load_file(tmp_path / name / "sae.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_with_changed_options_is_refused(tmp_path):
    acts, _ = sparse_dictionary_data(640, d=12, n_atoms=24, seed=1)
    Trainer(config("relu", "none"), TensorBatches(acts, 64), tmp_path).fit()
    changed = TrainConfig(**{**config("relu", "none").__dict__, "lr": (1e-2,)})
    with pytest.raises(
        ValueError,
        match=r"different configuration: lr: the checkpoint has \[0.003, 0.001\], requested \[0.01\]; rerun",
    ):
        Trainer(changed, TensorBatches(acts, 64), tmp_path).fit()


def test_resume_on_data_of_another_width_names_both_widths(tmp_path):
    acts, _ = sparse_dictionary_data(640, d=12, n_atoms=24, seed=1)
    cfg = config("relu", "none")
    with pytest.raises(Crash):
        Trainer(cfg, crashing(TensorBatches(acts, 64), 12), tmp_path).fit()
    wider, _ = sparse_dictionary_data(640, d=20, n_atoms=24, seed=1)
    with pytest.raises(ValueError, match=r"width 20\).*d_in=12"):
        Trainer(cfg, TensorBatches(wider, 64), tmp_path).fit()


def test_vitsae_train_killed_with_sigkill_resumes_to_the_same_weights(tmp_path):
    acts, _ = sparse_dictionary_data(640, d=12, n_atoms=24, active=3, seed=2)
    save_file({"activations": acts}, str(tmp_path / "acts.safetensors"))
    args = [
        "train",
        "--activations",
        str(tmp_path / "acts.safetensors"),
        "--architecture",
        "topk",
        "--k",
        "3",
    ]
    args += ["--expansion-factor", "2", "--batch-size", "32", "--total-tokens", str(32 * 400)]
    args += ["--checkpoint-every", "5", "--log-every", "5", "--no-progress", "--no-plot"]
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vitsae.cli", *args, "--out", str(killed)], env=env)
    pointer = killed / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if pointer.exists() and json.loads(pointer.read_text())["step"] >= 10:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    stopped_at = json.loads(pointer.read_text())["step"]
    assert 10 <= stopped_at < 400

    assert main([*args, "--out", str(killed)]) == 0
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    (name,) = json.loads((tmp_path / "straight" / "sweep.json").read_text())
    straight = load_file(tmp_path / "straight" / name / "sae.safetensors")
    resumed = load_file(killed / name / "sae.safetensors")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert not list((killed / "checkpoints").glob(".step_*"))
