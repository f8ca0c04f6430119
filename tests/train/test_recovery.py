"""Quality on known ground truth: SAEs recover a random sparse dictionary (256 unit atoms in 64-D)."""

import pytest

from tests.helpers import tiny_train_config
from vitsae.sae import load_sae
from vitsae.train import TensorBatches, Trainer
from vitsae.train.synthetic import dictionary_recovery, sparse_dictionary_data


@pytest.mark.parametrize(
    ("architecture", "l1_coefficient", "backend"), [("relu", 1.0, "dense"), ("topk", 0.0, "sparse")]
)
def test_sae_recovers_the_true_dictionary(tmp_path, architecture, l1_coefficient, backend):
    acts, dictionary = sparse_dictionary_data(16384, d=64, n_atoms=256, active=4, noise=0.01, seed=0)
    cfg = tiny_train_config(
        architecture=architecture,
        expansion_factor=(4,),
        k=(4,),
        l1_coefficient=(l1_coefficient,),
        lr=(3e-3,),
        batch_size=256,
        total_tokens=256 * 500,
        lr_warmup_steps=10,
        dead_tokens=256 * 50,
        log_every=100,
        checkpoint_every=10_000,
        backend=backend,
    )
    ((name, summary),) = Trainer(cfg, TensorBatches(acts, 256), tmp_path).fit().items()
    sae = load_sae(tmp_path / name)
    recovery = dictionary_recovery(sae.W_dec.detach(), dictionary)
    assert recovery >= 0.9, (recovery, summary["final_metrics"])
    assert summary["final_metrics"]["fvu"] < 0.3
