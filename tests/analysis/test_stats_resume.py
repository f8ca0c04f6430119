"""An interrupted statistics pass (Ctrl-C, kill -9) resumes from its checkpoint to the uninterrupted
result; a checkpoint of other inputs is refused and `--restart` discards it."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import harvest_small_store, tiny_sae
from vitsae.analysis.checkpoint import CHECKPOINT_META, CheckpointMismatch
from vitsae.analysis.cli import PARTIAL_DIR
from vitsae.analysis.compute import _encode, compute_feature_stats
from vitsae.analysis.stats import (
    _TENSOR_FIELDS,
    FeatureStats,
    FeatureStatsAccumulator,
    StatsConfig,
)
from vitsae.cli import main
from vitsae.fileio import read_json, save_tensors_atomic
from vitsae.sae.io import save_sae
from vitsae.store import ActivationStore
from vitsae.tokens import TokenLayout

REPO = Path(__file__).resolve().parents[2]
# n_samples below most firing counts, so the random sample is a real draw and the generator state matters
CONFIG = StatsConfig(k_images=4, k_patches=5, n_samples=3, hist_bins=12, hist_min=0.01, hist_max=100.0)
STATS_OPTIONS = ["--k-images", "4", "--k-patches", "5", "--n-samples", "3", "--hist-bins", "12"]
STATS_OPTIONS += ["--hist-min", "0.01", "--hist-max", "100"]
ROWS_PER_IMAGE = 17


def assert_same_stats(got: FeatureStats, want: FeatureStats) -> None:
    """Integers (counts, top-k images, patches, sample picks) exactly; float sums and scores to rounding."""
    assert (got.n_tokens, got.n_images, got.config, got.layout) == (
        want.n_tokens,
        want.n_images,
        want.config,
        want.layout,
    )
    for name in _TENSOR_FIELDS:
        a, b = getattr(got, name), getattr(want, name)
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
        else:
            assert torch.equal(a, b), name


def codes_of_images(store: ActivationStore, sae, first: int, stop: int) -> tuple[torch.Tensor, ...]:
    """The sparse codes, image and token indices of the rows of images [first, stop)."""
    rows = np.arange(first * ROWS_PER_IMAGE, stop * ROWS_PER_IMAGE)
    image_N, token_N = store.provenance(rows)
    assert (image_N >= first).all() and (image_N < stop).all()
    indices, values = _encode(sae, store[rows])
    image_N, token_N = torch.from_numpy(image_N.astype(np.int64)), torch.from_numpy(token_N.astype(np.int64))
    return indices, values, image_N, token_N


def test_state_dict_round_trip_continues_identically(small_store, tmp_path):
    sae = tiny_sae()
    layout = TokenLayout(1, 0, (4, 4), 32)
    straight = FeatureStatsAccumulator(sae.cfg.d_sae, layout, CONFIG)
    straight.update(*codes_of_images(small_store, sae, 0, 6))
    save_tensors_atomic(tmp_path / "state.safetensors", straight.state_dict())  # a snapshot, on disk
    rest = codes_of_images(small_store, sae, 6, 14)
    straight.update(*rest)  # the straight pass goes on; the saved snapshot must not move with it

    resumed = FeatureStatsAccumulator(sae.cfg.d_sae, layout, CONFIG)
    resumed.load_state_dict(load_file(str(tmp_path / "state.safetensors")))
    assert (resumed.n_images, resumed.n_tokens, resumed._last_image) == (6, 6 * ROWS_PER_IMAGE, 5)
    with pytest.raises(ValueError, match="image 3 arrives after image 5"):
        resumed.update(*codes_of_images(small_store, sae, 3, 4))
    resumed.update(*rest)
    a, b = straight.finish(), resumed.finish()
    assert a.sample_image_FS.ne(-1).any() and (a.fire_count_F > CONFIG.n_samples).any()
    for name in _TENSOR_FIELDS:  # the same updates on the same state: bit for bit
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert (a.n_images, a.n_tokens) == (b.n_images, b.n_tokens) == (14, 14 * ROWS_PER_IMAGE)


def test_a_state_of_another_shape_is_refused_unchanged(small_store):
    sae = tiny_sae()
    layout = TokenLayout(1, 0, (4, 4), 32)
    source = FeatureStatsAccumulator(sae.cfg.d_sae, layout, CONFIG)
    source.update(*codes_of_images(small_store, sae, 0, 3))
    other = FeatureStatsAccumulator(sae.cfg.d_sae, layout, dataclasses.replace(CONFIG, k_images=3))
    before = other.state_dict()
    wrong = (
        r"state is of another dictionary size or configuration: "
        r"image_index_Fk is torch.int64 \(96, 4\), here torch.int64 \(96, 3\); image_label_Fk .*; "
        r"image_map_FkP is torch.uint8 \(96, 4, 16\), here torch.uint8 \(96, 3, 16\); images.scores_Fk"
    )
    with pytest.raises(ValueError, match=wrong):
        other.load_state_dict(source.state_dict())
    after = other.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    state = source.state_dict()
    del state["generator_state"]
    with pytest.raises(ValueError, match=r"lacks tensors \['generator_state'\]"):
        FeatureStatsAccumulator(sae.cfg.d_sae, layout, CONFIG).load_state_dict(state)


@pytest.mark.parametrize(
    ("every", "batch_rows", "resume_batch_rows"), [(40, 7, 100), (100, 30, 5), (17, 17, 17)]
)
def test_a_pass_resumed_from_its_checkpoint_equals_an_uninterrupted_one(
    small_store, tmp_path, every, batch_rows, resume_batch_rows
):
    sae = tiny_sae()
    straight = compute_feature_stats(small_store, sae, CONFIG, batch_rows=64)
    # A finished pass leaves its last checkpoint behind (the caller removes it): continuing from it
    # redoes the images after it, with encoding batches cut at other rows.
    first = compute_feature_stats(
        small_store,
        sae,
        CONFIG,
        batch_rows=batch_rows,
        merge_rows=50,
        checkpoint_dir=tmp_path,
        checkpoint_every_rows=every,
    )
    assert_same_stats(first, straight)
    info = read_json(tmp_path / CHECKPOINT_META)
    row = info["next_row"]
    assert 0 < row < len(small_store) and row % ROWS_PER_IMAGE == 0 and info["images_done"] == row // 17
    assert [p.name for p in tmp_path.iterdir() if p.name != CHECKPOINT_META] == [
        f"state-{row:012d}.safetensors"
    ]
    resumed_at = []
    resumed = compute_feature_stats(
        small_store,
        sae,
        CONFIG,
        batch_rows=resume_batch_rows,
        checkpoint_dir=tmp_path,
        checkpoint_every_rows=every,
        on_resume=resumed_at.append,
    )
    assert resumed_at == [row]
    assert_same_stats(resumed, straight)


def test_a_checkpoint_of_other_inputs_is_refused(small_store, cli_inputs, tmp_path):
    compute_feature_stats(
        small_store, tiny_sae(), CONFIG, batch_rows=50, checkpoint_dir=tmp_path, checkpoint_every_rows=17
    )
    assert (tmp_path / CHECKPOINT_META).exists()
    with pytest.raises(
        CheckpointMismatch,
        match=r"the SAE \(checkpoint: 96 features, weights \w{12}…; now: "
        r"96 features, weights \w{12}…\)\. Rerun with the inputs",
    ):
        compute_feature_stats(small_store, tiny_sae("relu"), CONFIG, checkpoint_dir=tmp_path)
    bigger_store = ActivationStore.open(cli_inputs[0])
    with pytest.raises(
        CheckpointMismatch,
        match=r"the store \(checkpoint: hook 'blocks.1.hook_resid_post', 238 rows, "
        r"manifest \w{12}…; now: hook 'blocks.1.hook_resid_post', 816 rows, manifest \w{12}…\)",
    ):
        compute_feature_stats(bigger_store, tiny_sae(), CONFIG, checkpoint_dir=tmp_path)
    changed = dataclasses.replace(CONFIG, n_samples=5, seed=1)
    with pytest.raises(CheckpointMismatch, match=r"the statistics options \(n_samples 3 -> 5, seed 0 -> 1\)"):
        compute_feature_stats(small_store, tiny_sae(), changed, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=rf"the labels\. .*or delete {tmp_path} to start over"):
        compute_feature_stats(small_store, tiny_sae(), CONFIG, checkpoint_dir=tmp_path, labels=[1] * 14)


@pytest.fixture(scope="module")
def cli_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 48-image store (more images than the shared one, so a pass is long enough to kill) and an SAE."""
    root = tmp_path_factory.mktemp("stats_resume")
    store = harvest_small_store(root / "harvest", n_images=48)
    save_sae(tiny_sae(), root / "sae")
    return Path(store.path), root / "sae"


def stats_args(cli_inputs: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    store, sae = cli_inputs
    return ["stats", "--store", str(store), "--sae", str(sae), "--out", str(out), *STATS_OPTIONS, *extra]


def test_vitsae_stats_killed_with_sigkill_resumes_to_the_same_statistics(cli_inputs, tmp_path, capsys):
    killed = tmp_path / "killed"
    # One row per encoding step and a checkpoint after every image: a pass of 48 images lasts long
    # enough for the kill to land between the first checkpoint and the end.
    slow = ["--batch-rows", "1", "--merge-rows", "1", "--checkpoint-every-rows", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vitsae.cli", *stats_args(cli_inputs, killed, *slow)], env=env, cwd=REPO
    )
    checkpoint = killed / PARTIAL_DIR / CHECKPOINT_META
    deadline = time.monotonic() + 120
    while proc.poll() is None and not checkpoint.exists():
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the pass finished before it could be killed"
    row = read_json(checkpoint)["next_row"]
    n_rows = 48 * ROWS_PER_IMAGE
    assert 0 < row < n_rows and row % ROWS_PER_IMAGE == 0
    assert not (killed / "feature_stats.json").exists()

    capsys.readouterr()
    assert main(stats_args(cli_inputs, killed, "--batch-rows", "64")) == 0  # resumed, other batches
    assert f"resuming the statistics pass at row {row} of {n_rows}" in capsys.readouterr().out
    assert not (killed / PARTIAL_DIR).exists()
    assert main(stats_args(cli_inputs, tmp_path / "straight", "--checkpoint-every-rows", "0")) == 0
    assert not (tmp_path / "straight" / PARTIAL_DIR).exists()
    assert_same_stats(FeatureStats.load(killed), FeatureStats.load(tmp_path / "straight"))


def leave_a_partial_pass(cli_inputs: tuple[Path, Path], out: Path) -> None:
    """What an interrupted `vitsae stats` leaves in `out`: a checkpoint part way through the store."""
    store = ActivationStore.open(cli_inputs[0])
    compute_feature_stats(
        store, tiny_sae(), CONFIG, batch_rows=100, checkpoint_dir=out / PARTIAL_DIR, checkpoint_every_rows=200
    )
    assert 0 < read_json(out / PARTIAL_DIR / CHECKPOINT_META)["next_row"] < len(store)


def test_vitsae_stats_refuses_a_partial_pass_of_other_inputs_and_restart_discards_it(
    cli_inputs, tmp_path, capsys
):
    out = tmp_path / "stats"
    leave_a_partial_pass(cli_inputs, out)
    capsys.readouterr()
    assert main(stats_args(cli_inputs, out, "--n-samples", "4")) == 2
    err = capsys.readouterr().err
    assert "holds a partial statistics pass over different inputs: the statistics options " in err
    assert "(n_samples 3 -> 4). Rerun with the inputs it was started with" in err
    assert err.rstrip().endswith("to start over (or pass --restart)")
    other_sae = tmp_path / "relu_sae"
    save_sae(tiny_sae("relu"), other_sae)
    store = str(cli_inputs[0])
    assert main(["stats", "--store", store, "--sae", str(other_sae), "--out", str(out), *STATS_OPTIONS]) == 2
    assert "different inputs: the SAE (checkpoint: 96 features" in capsys.readouterr().err
    assert (out / PARTIAL_DIR / CHECKPOINT_META).exists() and not (out / "feature_stats.json").exists()

    assert main(stats_args(cli_inputs, out, "--n-samples", "4", "--restart")) == 0
    assert "resuming" not in capsys.readouterr().out
    assert not (out / PARTIAL_DIR).exists()
    assert FeatureStats.load(out).config.n_samples == 4
    straight = tmp_path / "straight"
    assert main(stats_args(cli_inputs, straight, "--n-samples", "4")) == 0
    assert_same_stats(FeatureStats.load(out), FeatureStats.load(straight))
