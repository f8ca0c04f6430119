"""The SAELens round trip (issue 11): `load_sae` reads what `export_saelens` writes (and SAELens' own
variant without the decoder bias on the input), and `vitsae export --format saelens` writes it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.sae.test_io import trained_like
from vitsae.cli import main
from vitsae.sae import ARCHITECTURES, export_saelens, load_sae


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_load_sae_reads_an_saelens_export(tmp_path, architecture) -> None:
    """Before: load_sae refused the folder (no sae.json)."""
    sae = trained_like(architecture)
    export_saelens(sae, tmp_path)
    loaded = load_sae(tmp_path)
    expected = {"relu": "relu", "topk": "topk"}.get(architecture, "jumprelu")
    assert loaded.cfg.architecture == expected and loaded.cfg.d_sae == 18 and loaded.cfg.norm_scale is None
    assert loaded.cfg.hook_name == "blocks.1.hook_resid_post" and loaded.cfg.model_spec == "vitsae:tiny"
    if architecture == "topk":
        assert loaded.cfg.k == 2
    x_raw = 3.0 * torch.randn(7, 6)
    torch.testing.assert_close(loaded(x_raw), sae(x_raw), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loaded.encode(x_raw), sae.encode(x_raw) / 1.0, rtol=1e-5, atol=1e-5)
    export_saelens(loaded, tmp_path / "again")  # and back: the same files up to rounding
    first, second = (
        load_file(tmp_path / "sae_weights.safetensors"),
        load_file(tmp_path / "again/sae_weights.safetensors"),
    )
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=1e-6, atol=1e-6)


def test_saelens_files_without_the_decoder_bias_on_the_input_load_equivalently(tmp_path) -> None:
    sae = trained_like("relu")
    export_saelens(sae, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    weights = load_file(tmp_path / "sae_weights.safetensors")
    cfg["apply_b_dec_to_input"] = False
    weights["b_enc"] = weights["b_enc"] - weights["b_dec"] @ weights["W_enc"]  # the same SAE, SAELens' way
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    save_file(weights, str(tmp_path / "sae_weights.safetensors"))
    x_raw = 3.0 * torch.randn(5, 6)
    pre = x_raw @ weights["W_enc"] + weights["b_enc"]
    want = pre.relu() @ weights["W_dec"] + weights["b_dec"]
    torch.testing.assert_close(load_sae(tmp_path)(x_raw), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(want, sae(x_raw), rtol=1e-5, atol=1e-5)


def test_unsupported_saelens_options_are_one_line(tmp_path, capsys) -> None:
    export_saelens(trained_like("topk"), tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    cfg["normalize_activations"] = "expected_average_only_in"
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="normalize_activations='expected_average_only_in'"):
        load_sae(tmp_path / "sae")
    cfg["normalize_activations"] = "none"
    cfg["d_sae"] = 17
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="d_sae 17 is not a multiple of d_in 6"):
        load_sae(tmp_path / "sae")


def test_vitsae_export_writes_every_sae_of_a_sweep_in_saelens_format(tmp_path, capsys) -> None:
    save_file({"activations": torch.randn(256, 8) * 5}, str(tmp_path / "acts.safetensors"))
    argv = ["train", "--activations", str(tmp_path / "acts.safetensors"), "--out", str(tmp_path / "run")]
    argv += ["--architecture", "topk", "--k", "2", "--lr", "1e-3", "3e-3", "--batch-size", "32"]
    argv += ["--total-tokens", "128", "--no-progress", "--no-plot", "--expansion-factor", "2"]
    assert main(argv) == 0
    assert (
        main(["export", "--format", "saelens", str(tmp_path / "run"), "--out", str(tmp_path / "lens")]) == 0
    )
    names = json.loads((tmp_path / "run" / "sweep.json").read_text())
    x_raw = 5 * torch.randn(9, 8)
    for name in names:
        original, exported = load_sae(tmp_path / "run" / name), load_sae(tmp_path / "lens" / name)
        assert json.loads((tmp_path / "lens" / name / "cfg.json").read_text())["architecture"] == "topk"
        torch.testing.assert_close(exported(x_raw), original(x_raw), rtol=1e-5, atol=1e-5)
    one = tmp_path / "run" / next(iter(names))
    assert main(["export", str(one), "--out", str(tmp_path / "single")]) == 0
    assert (tmp_path / "single" / "cfg.json").is_file()
    capsys.readouterr()
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "holds neither sae.json" in capsys.readouterr().err
