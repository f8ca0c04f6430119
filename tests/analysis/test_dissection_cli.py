"""`vitsae dissect` and `vitsae report-card` end to end on the shipped shapes CNN with a tiny SAE."""

from __future__ import annotations

import json

import pytest
import torch

from vitsae.cli import main
from vitsae.sae.config import SAEConfig
from vitsae.sae.io import save_sae
from vitsae.sae.model import SparseAutoencoder

HOOK = "resnet.encoder.stages.1"


def _sae(path, hook: str = HOOK, model: str = "vitsae:shapes-cnn", seed: int = 0) -> None:
    cfg = SAEConfig(d_in=64, expansion_factor=2, architecture="topk", k=4, hook_name=hook, model_spec=model)
    save_sae(SparseAutoencoder(cfg, generator=torch.Generator().manual_seed(seed)), path)


FAST = ["--threshold-images", "6", "--n-bootstrap", "10", "--no-progress"]


def test_dissect_and_report_card_commands(tmp_path, capsys) -> None:
    _sae(tmp_path / "sweep" / "a")
    _sae(tmp_path / "sweep" / "b", seed=1)
    _sae(tmp_path / "random", model="random:vitsae:shapes-cnn", seed=2)
    out = tmp_path / "out"
    argv = ["dissect", "--sae", str(tmp_path / "sweep" / "a"), "--source", "shapes:6:5", "--out", str(out)]
    assert main(argv + ["--randomized-sae", str(tmp_path / "random"), *FAST]) == 0
    info = json.loads((out / "dissection.json").read_text())
    assert set(info["bases"]) == {"sae", "neurons", "rotated", "randomized"}
    assert info["meta"]["randomized"]["model"] == "random:vitsae:shapes-cnn"
    assert len(info["bases"]["sae"]["units"]) == 128 and info["n_images"] == 6
    assert "shape:circle" in capsys.readouterr().out
    card_out = tmp_path / "card"
    argv = ["report-card", "--sae", str(tmp_path / "sweep"), "--source", "shapes:8:5", "--out", str(card_out)]
    assert main(argv + ["--probe-images", "8", *FAST]) == 0
    card = json.loads((card_out / "report_card.json").read_text())
    assert set(card["saes"]) == {"a", "b"} and card["format"] == "vitsae.report_card"
    assert set(card["saes"]["a"]) == {"trained", "random"}
    printed = capsys.readouterr().out
    assert "moran I" in printed and "a " in printed


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("hook", "trained on hook 'resnet.encoder.stages.0', not 'resnet.encoder.stages.1'"),
        ("width", "reads width d_in=64; hook 'resnet.encoder.stages.0' has width 32"),
        ("random", "the sanity check needs an SAE trained on 'random:vitsae:shapes-cnn'"),
        ("module", "vitsae does not run code named in a file: pass --model"),
    ],
)
def test_dissect_refuses_mismatched_inputs_in_one_line(tmp_path, capsys, setup: str, message: str) -> None:
    sae = tmp_path / "sae"
    extra = []
    if setup == "hook":
        _sae(sae)
        _sae(tmp_path / "other", hook="resnet.encoder.stages.0", model="random:vitsae:shapes-cnn")
        extra = ["--randomized-sae", str(tmp_path / "other")]
    elif setup == "width":
        _sae(sae, hook="resnet.encoder.stages.0", model="")
        extra = ["--model", "vitsae:shapes-cnn"]
    elif setup == "random":
        _sae(sae)
        _sae(tmp_path / "other")
        extra = ["--randomized-sae", str(tmp_path / "other")]
    else:
        _sae(sae, model="module:os:getcwd")
    code = main(
        ["dissect", "--sae", str(sae), "--source", "shapes:4", "--out", str(tmp_path / "o"), *extra, *FAST]
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' weight-loading bar
    assert code == 2 and err.startswith("vitsae dissect: error:") and message in err, err
