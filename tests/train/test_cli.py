"""`vitsae train` end to end: on a safetensors activations file and on a store harvested from a tiny ViT."""

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from vitsae.cli import main
from vitsae.sae import load_sae
from vitsae.train.data import load_activation_file
from vitsae.train.synthetic import sparse_dictionary_data

COMMON = ["--batch-size", "64", "--total-tokens", "1280", "--log-every", "5", "--checkpoint-every", "10"]
COMMON += ["--no-progress", "--lr-warmup-steps", "2"]


def test_train_sweep_on_activations_file(tmp_path, capsys):
    acts, _ = sparse_dictionary_data(512, d=16, n_atoms=32, seed=0)
    save_file({"activations": acts}, str(tmp_path / "acts.safetensors"))
    out = tmp_path / "out"
    argv = ["train", "--activations", str(tmp_path / "acts.safetensors"), "--out", str(out)]
    argv += ["--architecture", "topk", "--k", "2", "4", "--expansion-factor", "2", "--hook-name", "h"]
    assert main(argv + COMMON) == 0
    printed = capsys.readouterr().out
    names = sorted(json.loads((out / "sweep.json").read_text()))
    assert names == ["topk_x2_k2_lr0.004", "topk_x2_k4_lr0.004"]  # the derived rate, capped at 4e-3
    for name, k in zip(names, (2, 4), strict=True):
        assert name in printed
        sae = load_sae(out / name)
        assert (sae.cfg.k, sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.hook_name) == (k, 16, 32, "h")
        summary = json.loads((out / name / "sae.json").read_text())["training_summary"]
        assert summary["steps"] == 20 and summary["tokens"] == 1280
        assert summary["final_metrics"]["l0"] <= k
        records = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records] == [5, 10, 15, 20]
        for key in ("mse", "fvu", "l0", "l1", "dead_fraction", "dense_fraction", "tokens_per_s"):
            assert math.isfinite(records[-1][key])
        assert sum(records[-1]["density_histogram"]) == 32
        assert (out / name / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_on_harvested_store_records_its_provenance(tmp_path):
    from vitsae.data.preprocess import Preprocess
    from vitsae.data.shapes import ShapesDataset
    from vitsae.models import HookedViT, HookedViTConfig
    from vitsae.store import ActivationStore, HarvestConfig, harvest

    vit_cfg = HookedViTConfig(d_model=32, n_layers=2, n_heads=4, d_mlp=64, image_size=(32, 32), patch_size=8)
    model = HookedViT(vit_cfg, Preprocess(size=(32, 32))).eval()
    hook = "blocks.0.hook_resid_post"
    harvest_cfg = HarvestConfig(
        model="tests:tiny_vit",
        source="shapes:8",
        hooks=(hook,),
        out=tmp_path / "store",
        batch_size=4,
        progress=False,
    )
    store_dir = harvest(harvest_cfg, model=model, source=ShapesDataset(n_images=8, image_size=32))[hook]
    out = tmp_path / "sae"
    argv = ["train", "--store", str(store_dir), "--out", str(out), "--expansion-factor", "2"]
    argv += [
        "--batch-size",
        "32",
        "--total-tokens",
        "128",
        "--log-every",
        "2",
        "--no-progress",
        "--no-plot",
    ]
    assert main(argv) == 0
    (name,) = json.loads((out / "sweep.json").read_text())
    sae = load_sae(out / name)
    store = ActivationStore.open(store_dir)
    assert sae.cfg.hook_name == hook and sae.cfg.model_spec == "tests:tiny_vit"
    assert sae.cfg.store == str(store_dir.resolve())
    assert sae.cfg.norm_scale == pytest.approx(store.norm_scale)
    raw = store[torch.arange(16)]
    assert torch.allclose(
        sae(raw), sae(raw * store.norm_scale, normalized=True) / store.norm_scale, atol=1e-5
    )


def test_activation_file_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match=r"must be a \.safetensors file"):
        load_activation_file(tmp_path / "acts.pt")
    save_file({"acts": torch.zeros(4, 3)}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(KeyError, match=r"no tensor 'activations'; it holds \['acts'\]"):
        load_activation_file(tmp_path / "wrong.safetensors")
    save_file({"activations": torch.zeros(4, 3, 2)}, str(tmp_path / "cube.safetensors"))
    with pytest.raises(ValueError, match=r"must be \[N, D\], got shape \(4, 3, 2\)"):
        load_activation_file(tmp_path / "cube.safetensors")


def test_a_missing_or_damaged_activation_file_is_one_line(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="missing: pass --activations a .safetensors file"):
        load_activation_file(tmp_path / "absent.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 64)
    code = main(["train", "--activations", str(tmp_path / "bad.safetensors"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "bad.safetensors is damaged: not a readable safetensors file" in err
    assert "write the activations file again" in err
