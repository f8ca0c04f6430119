"""`vitsae attribute` and `vitsae faithfulness` end to end on the shipped shapes ViT (two images)."""

import json

from safetensors.torch import load_file

from vitsae.cli import main


def command(name: str, model: str, source: str, target: str, *rest: str) -> list[str]:
    """The argv of `vitsae NAME --model MODEL --source SOURCE --target TARGET REST...`."""
    return [name, "--model", model, "--source", source, "--target", target, *rest]


def test_attribute_writes_versioned_json_heatmaps_grid_and_overlays(tmp_path):
    out = tmp_path / "attr"
    argv = command("attribute", "vitsae:shapes-vit", "shapes:2:1000", "class:label")
    argv += ["--methods", "saliency", "gradcam", "--out", str(out), "--n-overlays", "1", "--no-progress"]
    assert main(argv) == 0
    meta = json.loads((out / "attribution.json").read_text())
    assert (meta["format"], meta["version"]) == ("vitsae.attribution", 1)
    assert meta["target"] == "class:label" and [im["index"] for im in meta["images"]] == [0, 1]
    assert set(meta["methods"]) == {"saliency", "gradcam"}
    tensors = load_file(str(out / "heatmaps.safetensors"))
    assert tensors["map/saliency"].shape == (2, 64, 64) and tensors["indices"].tolist() == [0, 1]
    assert (out / "grid.png").stat().st_size > 0
    assert len(list((out / "overlays" / "gradcam").glob("*.png"))) == 1


def test_faithfulness_writes_a_table_with_a_random_row(tmp_path):
    out = tmp_path / "faith"
    argv = command("faithfulness", "vitsae:shapes-vit", "shapes:2:1000", "class:label")
    argv += ["--methods", "saliency", "--substrates", "zero", "--steps", "2"]
    argv += ["--randomisation-images", "1", "--randomisation-methods", "saliency", "--out", str(out)]
    argv += ["--no-progress", "--n-overlays", "1"]
    assert main(argv) == 0
    result = json.loads((out / "faithfulness.json").read_text())
    assert (result["format"], result["version"]) == ("vitsae.faithfulness", 1)
    assert result["rows"] == ["saliency", "random"] and set(result["table"]) == {"saliency", "random"}
    assert {"deletion_auc[zero]", "aopc[patch]", "pointing_game", "mass_inside"} <= set(result["columns"])
    check = result["randomisation"]
    assert check["layers_randomised_cumulatively"][0] == "W_U+b_U"
    assert len(check["methods"]["saliency"]["spearman"]) == len(check["layers_randomised_cumulatively"])
    assert "| random |" in (out / "table.md").read_text()
    per_image = load_file(str(out / "faithfulness.safetensors"))
    assert per_image["saliency/pointing_game"].shape == (2,)
    mean = float(per_image["random/aopc[zero]"].double().mean())
    assert abs(mean - result["table"]["random"]["aopc[zero]"]) < 1e-5


def test_bad_input_is_one_line_on_stderr(tmp_path, capsys):
    argv = command("attribute", "vitsae:shapes-vit", "shapes:2:1000", "class:wolf")
    assert main([*argv, "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after any model-loading bars
    assert err.startswith(
        "vitsae attribute: error: target 'class:wolf': no class 'wolf'; classes: round-warm"
    )
    argv = command("faithfulness", "vitsae:shapes-cnn", "shapes:2:1000", "class:0")
    argv += ["--methods", "gradcam", "--gradcam-hook", "hook_logits", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after any model-loading bars
    assert err.startswith("vitsae faithfulness: error: Grad-CAM hook 'hook_logits' has no patch grid")
    assert "hooks with a spatial layout: resnet.embedder" in err and "resnet.pooler" not in err


def test_attribute_explains_an_sae_feature_given_its_run_directory(tmp_path):
    from vitsae.sae import SAEConfig, SparseAutoencoder, save_sae

    hook = "blocks.1.hook_resid_post"
    sae = SparseAutoencoder(SAEConfig(d_in=96, expansion_factor=2, architecture="relu", hook_name=hook))
    save_sae(sae, tmp_path / "sae")
    out = tmp_path / "attr"
    argv = command("attribute", "vitsae:shapes-vit", "shapes:1:1000", "feature:3@2,5")
    argv += ["--sae", str(tmp_path / "sae"), "--methods", "saliency", "gradcam", "--out", str(out)]
    assert main([*argv, "--n-overlays", "0", "--no-progress"]) == 0
    meta = json.loads((out / "attribution.json").read_text())
    assert meta["target"] == "feature:3@2,5" and meta["target_hook"] == hook
    assert load_file(str(out / "heatmaps.safetensors"))["map/gradcam"].shape == (1, 64, 64)


def test_an_unknown_method_lists_the_methods(tmp_path, capsys):
    argv = command("attribute", "vitsae:shapes-vit", "shapes:1", "class:0")
    assert main([*argv, "--methods", "lime", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "vitsae attribute: error: unknown attribution method 'lime'; valid: saliency, gradxinput, ig, "
        "gradcam, occlusion, rise, smoothgrad:saliency, smoothgrad:gradxinput, smoothgrad:ig, "
        "smoothgrad:gradcam"
    )
