"""`vitsae stats` then `vitsae browse` on a real harvested store and a saved SAE, and their errors."""

from __future__ import annotations

import json

import torch

from tests.helpers import HOOK, harvest_small_store, tiny_sae, tiny_vit
from vitsae.analysis.logits import LOGIT_CLASSES, LogitEffects, logit_effects, unembedding
from vitsae.analysis.stats import FeatureStats
from vitsae.cli import main
from vitsae.sae.io import save_sae


def stats_from_cli(tmp_path, out: str, *options: str) -> int:
    """Harvest the small store, save the tiny SAE and run `vitsae stats` on them into tmp_path/out."""
    store = harvest_small_store(tmp_path / "harvest")
    save_sae(tiny_sae(), tmp_path / "sae")
    sae, out_dir = str(tmp_path / "sae"), str(tmp_path / out)
    return main(["stats", "--store", str(store.path), "--sae", sae, "--out", out_dir, *options])


def test_stats_then_browse_from_the_command_line(tmp_path, capsys):
    rc = stats_from_cli(tmp_path, "stats", "--k-images", "3", "--batch-rows", "50")
    assert rc == 0
    stats = FeatureStats.load(tmp_path / "stats")
    assert stats.config.k_images == 3 and stats.meta["sae"] == str((tmp_path / "sae").resolve())
    assert "features (" in capsys.readouterr().out

    (tmp_path / "labels.json").write_text(json.dumps({"2": "a <label>"}))
    rc = main(
        [
            "browse",
            "--stats",
            str(tmp_path / "stats"),
            "--out",
            str(tmp_path / "site"),
            "--labels",
            str(tmp_path / "labels.json"),
            "--features",
            "0",
            "1",
            "2",
            "--title",
            "cli run",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    # the recorded spec "tests:tiny_vit" names no loadable model: the browser is written without logits
    assert "no logit effects" in captured.err
    assert captured.out.strip() == str(tmp_path / "site" / "index.html")
    pages = sorted(p.name for p in (tmp_path / "site" / "data" / "f" / "000").iterdir())
    assert pages == ["0.js", "1.js", "2.js"]
    assert "a <label>" in (tmp_path / "site" / "data" / "index.js").read_text()


def test_browse_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["browse", "--stats", str(tmp_path / "nothing"), "--out", str(tmp_path / "site")]) == 2
    assert "no feature_stats.json" in capsys.readouterr().err
    assert (
        main(
            [
                "stats",
                "--store",
                str(tmp_path / "nothing"),
                "--sae",
                str(tmp_path),
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 2
    )
    assert "vitsae stats: error" in capsys.readouterr().err


def test_stats_with_an_explicit_model_saves_the_logit_effects_the_browser_shows(tmp_path, capsys):
    assert stats_from_cli(tmp_path, "s", "--model", "module:tests.helpers:tiny_vit") == 0
    assert "no logit effects" not in capsys.readouterr().err
    saved = LogitEffects.load(tmp_path / "s")
    want = logit_effects(tiny_sae().W_dec, unembedding(tiny_vit()), k=LOGIT_CLASSES)
    for name in ("up_class_Fk", "up_value_Fk", "down_class_Fk", "down_value_Fk"):
        assert torch.equal(getattr(saved, name), getattr(want, name)), name
    args = [
        "browse",
        "--stats",
        str(tmp_path / "s"),
        "--out",
        str(tmp_path / "site"),
        "--no-images",
        "--features",
        "5",
    ]
    assert main(args) == 0
    assert "no logit effects" not in capsys.readouterr().err
    text = (tmp_path / "site" / "data" / "f" / "000" / "5.js").read_text()
    data = json.loads(text[len("vitsaeFeature(") :].rstrip().rstrip(";").rstrip(")"))
    assert data["logits"] is not None and "without the image source" in data["images_note"]
    assert stats_from_cli(tmp_path, "s", "--model", "module:nowhere:nothing") == 2
    assert "cannot find factory" in capsys.readouterr().err


def test_stats_images_writes_the_explorer_data_and_browse_renders_it(tmp_path, capsys):
    from vitsae.analysis.images import IMAGES_META, ImageData
    from vitsae.analysis.neighbours import Neighbours

    assert stats_from_cli(tmp_path, "s", "--images", "5", "--neighbours", "3", "--no-progress") == 0
    images = ImageData.load(tmp_path / "s")
    assert images.image_I.tolist() == [0, 1, 2, 3, 4] and images.meta["embed_dims"] == 32
    assert Neighbours.load(tmp_path / "s").decoder_index_Fk.shape == (tiny_sae().cfg.d_sae, 3)
    site = tmp_path / "site"
    assert main(["browse", "--stats", str(tmp_path / "s"), "--out", str(site), "--no-progress"]) == 0
    assert sorted(p.name for p in (site / "data" / "i" / "000").iterdir()) == [f"{i}.js" for i in range(5)]
    assert (site / "img" / "000" / "4.jpg").is_file()
    capsys.readouterr()
    # rerun without --images: the explorer files of the earlier run go
    rerun = main(
        [
            "stats",
            "--store",
            str(tmp_path / "harvest" / HOOK),
            "--sae",
            str(tmp_path / "sae"),
            "--out",
            str(tmp_path / "s"),
        ]
    )
    assert (
        rerun == 0 and not (tmp_path / "s" / IMAGES_META).exists() and ImageData.load(tmp_path / "s") is None
    )
    assert stats_from_cli(tmp_path, "u", "--image-ids", "7", "2", "--no-progress") == 0
    assert ImageData.load(tmp_path / "u").image_I.tolist() == [2, 7]
    assert stats_from_cli(tmp_path, "v", "--image-ids", "99", "--no-progress") == 2
    assert "images [99] are not in the store" in capsys.readouterr().err
    assert main(["stats", "--store", "x", "--sae", "y", "--out", str(tmp_path / "t"), "--images", "-1"]) == 2
    assert "images must be >= 0" in capsys.readouterr().err


def test_stats_images_with_a_classifier_records_its_predictions(tmp_path, capsys):
    model = "module:tests.helpers:tiny_vit"
    assert stats_from_cli(tmp_path, "s", "--images", "3", "--model", model, "--no-progress") == 0
    from vitsae.analysis.images import ImageData
    from vitsae.analysis.predictions import main_features

    images = ImageData.load(tmp_path / "s")
    predictions = images.meta["predictions"]
    vit = tiny_vit().eval()
    source = harvest_small_store(tmp_path / "again").source()
    with torch.no_grad():
        probs = vit(torch.stack([vit.preprocess(source[i].image) for i in range(3)])).softmax(1)
    names = predictions["class_names"]
    assert [row[0][0] for row in predictions["top"]] == [names[int(c)] for c in probs.argmax(1)]
    for position, ablated in enumerate(predictions["ablated"]):
        assert sorted(ablated) == sorted(str(f) for f in main_features(images, position, 6)) and ablated
        assert all(after[0] in names and 0 <= after[1] <= 1 for after in ablated.values())
    site = tmp_path / "site"
    assert main(["browse", "--stats", str(tmp_path / "s"), "--out", str(site), "--no-progress"]) == 0
    assert '"ablated":{' in (site / "data" / "i" / "000" / "0.js").read_text()


def test_explorer_predictions_never_load_a_module_spec_read_from_a_store():
    from types import SimpleNamespace

    from vitsae.analysis.cli import _classifier

    store = SimpleNamespace(manifest={"model": {"spec": "module:os:abort"}})
    model, why = _classifier(None, store)
    assert model is None and "does not run code named in a file: pass --model" in why
