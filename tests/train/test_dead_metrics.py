"""The trainer's dead-feature numbers agree with a held-out evaluation by `vitsae.eval`."""

import pytest
import torch

from tests.helpers import tiny_train_config
from vitsae.eval import evaluate_sae
from vitsae.eval.metrics import duplicate_fraction, later_copies
from vitsae.sae import load_sae
from vitsae.train import TensorBatches, Trainer
from vitsae.train.dead import DeadFeatureTracker
from vitsae.train.synthetic import sparse_dictionary_data


def test_rare_fraction_matches_a_held_out_evaluation(tmp_path):
    # Every training row is fresh (no epochs): a support fitted to repeated rows would be another test.
    acts, _ = sparse_dictionary_data(407_200, d=16, n_atoms=64, active=3, noise=0.02, seed=0)
    train, held_out = acts[:307_200], acts[307_200:]
    cfg = tiny_train_config(
        architecture="relu",
        expansion_factor=(8,),
        l1_coefficient=(6.0,),  # strong: many features die or fire only now and then
        dead_handling="none",
        copies_every=0,  # nothing re-initialised: the counters are what is tested
        batch_size=256,
        total_tokens=256 * 1200,  # 307,200 rows: three windows of 10^5 rows
        log_every=100,
        checkpoint_every=10**6,
    )
    ((name, summary),) = Trainer(cfg, TensorBatches(train, 256), tmp_path).fit().items()
    final = summary["final_metrics"]
    sae = load_sae(tmp_path / name)
    scale = sae.cfg.norm_scale
    evaluated = evaluate_sae(sae, (held_out * scale).split(4096), normalized=True)
    assert 0.1 < evaluated["never_fired_fraction"] < 0.9  # the case the numbers must get right
    assert final["rare_fraction"] == pytest.approx(evaluated["never_fired_fraction"], abs=0.05)
    assert final["dead_fraction"] <= final["rare_fraction"] + 1e-9


def test_dead_tracker_windows():
    tracker = DeadFeatureTracker(3, dead_tokens=100_000)
    tracker.update(torch.tensor([50.0, 1.0, 0.0]), 50_000)
    assert tracker.rare_fraction is None  # no complete window yet
    tracker.update(torch.tensor([50.0, 0.0, 0.0]), 50_000)
    assert tracker.rare_fraction == pytest.approx(1 / 3)  # once in 10^5 rows is not rare; never is
    assert tracker.window_tokens == 0
    assert tracker.dead_mask_F.tolist() == [False, False, True]
    tracker.update(torch.tensor([1.0, 0.0, 0.0]), 50_000)
    assert tracker.dead_mask_F.tolist() == [False, True, True]  # silent for the last 10^5 rows


def test_duplicate_fraction_counts_copies():
    rows = torch.eye(4)
    copies = torch.cat([rows, rows[:1] * 2.0, rows[1:2] + 0.01 * rows[2:3]])  # two near-copies
    assert duplicate_fraction(copies) == pytest.approx(4 / 6)
    assert duplicate_fraction(rows) == 0.0


def test_later_copies_keep_the_lowest_numbered_feature_of_each_direction():
    rows = torch.eye(4)
    decoder = torch.cat([rows, rows[:1] * 2.0, rows[1:2] + 0.01 * rows[2:3], -rows[3:4]])
    # rows 4 and 5 copy rows 0 and 1 (any norm); row 6 points the other way, which is no copy
    assert later_copies(decoder).tolist() == [False] * 4 + [True, True, False]
    assert later_copies(decoder.flip(0)).tolist() == [False] * 3 + [False, False, True, True]


def test_later_copies_match_an_unchunked_scan():
    """4,200 rows need two chunks of cosines (at most 2^24 at once)."""
    decoder = torch.randn(4200, 8, generator=torch.Generator().manual_seed(0))
    unit = decoder / decoder.norm(dim=1, keepdim=True)
    want = ((unit @ unit.T).tril(diagonal=-1) > 0.9).any(1)
    assert torch.equal(later_copies(decoder), want) and 0 < int(want.sum()) < 4200
