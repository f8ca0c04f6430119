"""Saving, loading (safetensors only) and the SAELens export, checked by SAELens' own forward equations."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from vitsae.fileio import PICKLE_SUFFIXES
from vitsae.sae import ARCHITECTURES, SAEConfig, SparseAutoencoder, export_saelens, load_sae, save_sae
from vitsae.sae.io import read_sae_metadata


def trained_like(architecture: str) -> SparseAutoencoder:
    cfg = SAEConfig(
        d_in=6,
        expansion_factor=3,
        architecture=architecture,
        k=2,
        hook_name="blocks.1.hook_resid_post",
        model_spec="vitsae:tiny",
        store="/data/store",
        norm_scale=0.5,
    )
    sae = SparseAutoencoder(cfg, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn_like(p))
        if architecture == "batchtopk":
            sae.threshold.fill_(0.07)
    return sae.eval()


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_save_load_round_trip(tmp_path, architecture):
    sae = trained_like(architecture)
    save_sae(sae, tmp_path, training_summary={"steps": 12})
    loaded = load_sae(tmp_path / "sae.safetensors")
    assert loaded.cfg == sae.cfg and not loaded.training
    x = torch.randn(4, 6)
    assert torch.equal(loaded(x), sae(x))
    meta = read_sae_metadata(tmp_path)
    assert meta["training_summary"] == {"steps": 12} and meta["format_version"] == 1
    assert meta["config"]["hook_name"] == "blocks.1.hook_resid_post"


@pytest.mark.parametrize("suffix", PICKLE_SUFFIXES)
def test_pickle_files_are_refused(tmp_path, suffix):
    path = tmp_path / f"sae{suffix}"
    path.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ValueError, match=rf"refusing to load a \{suffix} file.*only from safetensors"):
        load_sae(path)


def test_corrupt_or_foreign_saves_are_refused(tmp_path):
    sae = trained_like("relu")
    save_sae(sae, tmp_path)
    tensors = load_file(tmp_path / "sae.safetensors")
    tensors["W_enc"] = tensors["W_enc"][:, :5].contiguous()
    save_file(tensors, str(tmp_path / "sae.safetensors"))
    with pytest.raises(ValueError, match=r"'W_enc': \(6, 5\).*do not match the config's.*'W_enc': \(6, 18\)"):
        load_sae(tmp_path)
    meta = json.loads((tmp_path / "sae.json").read_text())
    (tmp_path / "sae.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ValueError, match="format version 99 is newer"):
        load_sae(tmp_path)
    (tmp_path / "sae.json").write_text(json.dumps({**meta, "format": "other"}))
    with pytest.raises(ValueError, match="not a vitsae SAE"):
        load_sae(tmp_path)
    with pytest.raises(FileNotFoundError, match="expected a folder"):
        load_sae(tmp_path / "missing")


def saelens_forward(weights, cfg, x):
    """SAELens' inference equations for its standard, topk and jumprelu SAEs (apply_b_dec_to_input)."""
    pre = (x - weights["b_dec"]) @ weights["W_enc"] + weights["b_enc"]
    if cfg["architecture"] == "standard":
        codes = pre.relu()
    elif cfg["architecture"] == "topk":
        values, indices = pre.topk(cfg["k"], dim=-1)
        codes = torch.zeros_like(pre).scatter(-1, indices, values.relu())
    else:
        codes = pre.relu() * (pre > weights["threshold"])
    return codes @ weights["W_dec"] + weights["b_dec"]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_saelens_export_reproduces_the_sae_on_raw_activations(tmp_path, architecture):
    sae = trained_like(architecture)
    export_saelens(sae, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    weights = load_file(tmp_path / "sae_weights.safetensors")
    expected_arch = {"relu": "standard", "topk": "topk"}.get(architecture, "jumprelu")
    assert cfg["architecture"] == expected_arch
    assert (cfg["d_in"], cfg["d_sae"], cfg["normalize_activations"]) == (6, 18, "none")
    assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
    assert cfg["metadata"]["model_name"] == "vitsae:tiny"
    expected_keys = {"W_enc", "b_enc", "W_dec", "b_dec"} | (
        {"threshold"} if expected_arch == "jumprelu" else set()
    )
    assert set(weights) == expected_keys
    assert weights["W_enc"].shape == (6, 18) and weights["W_dec"].shape == (18, 6)
    x_raw = 3.0 * torch.randn(5, 6)
    torch.testing.assert_close(saelens_forward(weights, cfg, x_raw), sae(x_raw), rtol=1e-5, atol=1e-5)
