"""Spliced evaluation against numbers recomputed by hand on a tiny ViT; the eval command and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.edit.conftest import edit_vit
from tests.helpers import random_sae
from vitsae.cli import main
from vitsae.data.loader import ImageBatch
from vitsae.edit import SpliceSite, spliced
from vitsae.eval.spliced import evaluate_spliced
from vitsae.sae.io import save_sae

HOOK = "blocks.0.hook_resid_post"  # patches after the last block do not reach the CLS head


def _kl(p_logits, q_logits):
    log_p, log_q = p_logits.double().log_softmax(1), q_logits.double().log_softmax(1)
    return float((log_p.exp() * (log_p - log_q)).sum(1).mean())


def test_metrics_equal_a_brute_force_recomputation():
    model = edit_vit()
    sae = random_sae(32, HOOK)
    pixels = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 1, 2, 3, 4, 0])

    def batches():
        for start in (0, 4):
            sl = slice(start, start + 4)
            yield ImageBatch(pixels[sl], torch.arange(6)[sl], labels[sl], [])

    site = SpliceSite(sae, tokens="patches")
    result = evaluate_spliced(model, [site], batches, logits=True, accuracy=True, progress=False)
    with torch.no_grad():
        original = model(pixels)
        with spliced(model, [site], error_term=False):
            spliced_out = model(pixels)
        x_BTD = model.collect(pixels, [HOOK])[HOOK]
        mean_D = x_BTD[:, 3:].reshape(-1, 32).double().mean(0).float()

        def setter(value):
            def hook(acts, hook):
                acts = acts.clone()
                acts[:, 3:] = value
                return acts

            return hook

        zeroed = model.run_with_hooks(pixels, fwd_hooks=[(HOOK, setter(0.0))])
        meaned = model.run_with_hooks(pixels, fwd_hooks=[(HOOK, setter(mean_D))])
    row = result["saes"][0]
    assert result["original"]["accuracy"] == pytest.approx(
        float((original.argmax(1) == labels).double().mean())
    )
    for name, out in (("spliced", spliced_out), ("zero_ablation", zeroed), ("mean_ablation", meaned)):
        assert row[name]["kl"] == pytest.approx(_kl(original, out), rel=1e-6)
        assert row[name]["agreement"] == pytest.approx(
            float((original.argmax(1) == out.argmax(1)).double().mean())
        )
        assert row[name]["accuracy"] == pytest.approx(float((out.argmax(1) == labels).double().mean()))
    kl_s, kl_z = row["spliced"]["kl"], row["zero_ablation"]["kl"]
    assert row["recovered"]["kl_zero_ablation"] == pytest.approx((kl_s - kl_z) / (0 - kl_z))
    x_ND = x_BTD[:, 3:].reshape(-1, 32).double()
    recon = sae(x_ND.float()).detach().double()
    fvu = float((x_ND - recon).square().sum() / (x_ND - x_ND.mean(0)).square().sum())
    assert row["reconstruction"]["fvu"] == pytest.approx(fvu, rel=1e-5)
    assert row["reconstruction"]["l0"] == pytest.approx(4.0)  # TopK k=4 on random weights fires k per token


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    for i, k in enumerate((4, 8)):
        save_sae(random_sae(96, "blocks.2.hook_resid_post", k=k, seed=i), root / f"run{k}")
    return root


def test_eval_command_over_a_sweep_folder(sweep, tmp_path, capsys):
    args = ["eval", "--model", "vitsae:shapes-vit", "--sae", str(sweep), "--source", "shapes:12", "--out"]
    assert main([*args, str(tmp_path / "ev"), "--batch-size", "6", "--no-progress"]) == 0
    record = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert record["format"] == "vitsae.eval" and record["results"]["n_images"] == 12
    rows = record["results"]["saes"]
    assert [Path(r["sae"]).name for r in rows] == ["run4", "run8"]
    assert [r["reconstruction"]["l0"] for r in rows] == [4.0, 8.0]
    assert all(0 <= r["spliced"]["accuracy"] <= 1 and r["spliced"]["kl"] >= 0 for r in rows)
    out = capsys.readouterr().out
    assert "run4" in out and "run8" in out and "original model accuracy" in out


def test_eval_bad_input(sweep, tmp_path, capsys):
    (tmp_path / "images").mkdir()
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "images" / "a.png")
    base = ["eval", "--model", "vitsae:shapes-vit", "--out", str(tmp_path / "ev"), "--no-progress"]
    assert (
        main([*base, "--sae", str(sweep / "run4"), "--source", str(tmp_path / "images"), "--accuracy", "on"])
        == 2
    )
    assert "has no labels" in capsys.readouterr().err
    assert main([*base, "--sae", str(tmp_path), "--source", "shapes:4"]) == 2
    assert "neither an SAE folder" in capsys.readouterr().err


def test_embedding_output_reports_cosines_only():
    model = edit_vit()
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))

    def batches():
        yield ImageBatch(pixels, torch.arange(4), torch.full((4,), -1), [])

    site = SpliceSite(random_sae(32, HOOK))
    result = evaluate_spliced(model, [site], batches, logits=False, accuracy=False, progress=False)
    row = result["saes"][0]
    assert result["output"] == "embedding" and set(result["original"]) == {"output_cosine"}
    assert set(row["spliced"]) == {"output_cosine"} and set(row["recovered"]) == {
        "cosine_zero_ablation",
        "cosine_mean_ablation",
    }
    with torch.no_grad(), spliced(model, [site], error_term=False):
        expected = torch.nn.functional.cosine_similarity(model(pixels), edit_vit()(pixels), dim=1).mean()
    assert row["spliced"]["output_cosine"] == pytest.approx(float(expected), rel=1e-5)
