"""ReLU copies: features whose decoder row duplicates a lower-numbered feature's are re-initialised on the
documented schedule (with the dead ones), counted in the metrics, and a resumed run stays bit-identical."""

import json

import pytest
import torch

import vitsae.train.trainer as trainer_module
from tests.helpers import tiny_train_config
from tests.train.test_resume import straight_and_resumed
from vitsae.eval.metrics import later_copies
from vitsae.sae import load_sae
from vitsae.train import TensorBatches, Trainer
from vitsae.train.synthetic import sparse_dictionary_data


def spy_on_copies(monkeypatch) -> list[int]:
    """The copies found by every copies pass, with three planted first so there are some."""
    calls = []

    def planted(W_dec_FD: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            W_dec_FD[1:4] = W_dec_FD[0]  # three copies of feature 0
        copies_F = later_copies(W_dec_FD)
        calls.append(int(copies_F.sum()))
        return copies_F

    monkeypatch.setattr(trainer_module, "later_copies", planted)
    return calls


@pytest.mark.parametrize("architecture", ["relu", "topk", "jumprelu"])
def test_copies_are_reinitialised_every_n_steps_until_the_fraction_for_relu_only(
    tmp_path, monkeypatch, architecture
):
    calls = spy_on_copies(monkeypatch)
    acts, _ = sparse_dictionary_data(16 * 12, d=8, n_atoms=24, active=3, seed=4)
    cfg = tiny_train_config(architecture=architecture, k=(4,), copies_every=2, copies_until=0.5)
    ((name, summary),) = Trainer(cfg, TensorBatches(acts, 16), tmp_path).fit().items()
    if architecture != "relu":
        assert calls == [] and summary["final_metrics"]["copies_resampled"] == 0
        return
    assert len(calls) == 3  # steps 1, 3 and 5 of 12: (step + 1) % 2 == 0 and step < 0.5 * 12
    assert all(n >= 3 for n in calls)
    assert summary["final_metrics"]["copies_resampled"] == sum(calls)
    # the copies planted at the last pass were re-initialised toward data rows and stay apart
    assert not later_copies(load_sae(tmp_path / name).W_dec)[1:4].all()


def test_copies_every_zero_turns_them_off(tmp_path, monkeypatch):
    calls = spy_on_copies(monkeypatch)
    acts, _ = sparse_dictionary_data(16 * 12, d=8, n_atoms=24, active=3, seed=4)
    cfg = tiny_train_config(architecture="relu", copies_every=0)
    Trainer(cfg, TensorBatches(acts, 16), tmp_path).fit()
    assert calls == []


def test_a_run_resumed_across_a_copies_pass_is_bit_identical(tmp_path):
    """Checkpoint at step 15, crash at 25: the resumed run redoes the copies pass of step 19 (which draws
    rows from the checkpointed generator) and the SAE comes out the same to the bit."""
    acts, _ = sparse_dictionary_data(16 * 40, d=8, n_atoms=24, active=3, seed=4)
    source = TensorBatches(acts, 16, seed=1)
    cfg = tiny_train_config(
        architecture="relu", target_l0=(3.0,), total_tokens=16 * 40, checkpoint_every=15, copies_every=10
    )
    (name,) = straight_and_resumed(cfg, source, tmp_path, crash_at_step=25)
    summaries = [json.loads((tmp_path / d / "sweep.json").read_text())[name] for d in ("straight", "resumed")]
    assert (
        summaries[0]["final_metrics"]["copies_resampled"] == summaries[1]["final_metrics"]["copies_resampled"]
    )


def test_copies_settings_are_checked():
    with pytest.raises(Exception, match="copies_every"):
        tiny_train_config(copies_every=-1)
    with pytest.raises(Exception, match="copies_until"):
        tiny_train_config(copies_until=1.5)
