"""`vitsae edit` on the shipped shapes ViT with a random SAE: edit.json, the picture, --explain, bad input."""

from __future__ import annotations

import json

import pytest

from tests.helpers import random_sae
from vitsae.cli import main
from vitsae.edit.edits import edits_from_json
from vitsae.sae.io import save_sae

HOOK = "blocks.2.hook_resid_post"


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sae")
    save_sae(random_sae(96, HOOK, k=8), directory)
    return directory


def _edit(sae_dir, out, *extra):
    return main(
        [
            "edit",
            "--model",
            "vitsae:shapes-vit",
            "--sae",
            str(sae_dir),
            "--source",
            "shapes:16",
            "--out",
            str(out),
        ]
        + ["--batch-size", "8", "--no-progress", *extra]
    )


def test_edit_writes_results_controls_and_picture(sae_dir, tmp_path, capsys):
    assert _edit(sae_dir, tmp_path / "e", "--ablate", "1,2,3", "--tokens", "patches") == 0
    record = json.loads((tmp_path / "e" / "edit.json").read_text())
    assert record["format"] == "vitsae.edit" and record["format_version"] == 1
    assert [e.features for e in edits_from_json(record["edits"])] == [(1, 2, 3)]
    results = record["results"]
    assert set(results) == {"edit", "random_features", "random_directions"}
    edit = results["edit"]
    assert edit["n_images"] == 16 and 0 < edit["n_target"] <= 16
    assert sum(map(sum, edit["confusion"]["target"])) == edit["n_target"]
    assert all(v == 0.0 for v in edit["mean_logit_change"]["off_target"].values())  # delta semantics
    swapped = results["random_features"]["features"][HOOK]
    assert set(swapped) == {"1", "2", "3"} and not {1, 2, 3} & set(swapped.values())
    assert (tmp_path / "e" / "before_after.png").stat().st_size > 1000
    assert "random_directions" in capsys.readouterr().out
    assert _edit(sae_dir, tmp_path / "again", "--ablate", "1,2,3", "--tokens", "patches") == 0
    again = json.loads((tmp_path / "again" / "edit.json").read_text())["results"]
    assert again == results  # seeded controls: the same run gives the same numbers


def test_explain_ranks_and_confirms(sae_dir, tmp_path, capsys):
    assert _edit(sae_dir, tmp_path / "x", "--explain", "round-warm", "--top", "4", "--confirm", "2") == 0
    record = json.loads((tmp_path / "x" / "explain.json").read_text())
    ranking = record["results"]["ranking"]
    assert [row["rank"] for row in ranking] == [1, 2, 3, 4]
    assert ranking[0]["attribution"] >= ranking[-1]["attribution"]
    assert "ablation" in ranking[1] and "ablation" not in ranking[2]
    assert "features driving class round-warm" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ablate", "900"], "feature(s) [900] out of range"),
        (["--ablate", "1", "--tokens", "cls"], "selects no token of hook"),
        (["--clamp", "3"], "expected F=VALUE"),
        (["--explain", "hexagon"], "unknown class 'hexagon'; the model's classes are: round-warm"),
        ([], "nothing to do"),
        (["--steer", "1=2", "--unit", "max"], "needs the SAE's `vitsae stats` folder"),
    ],
)
def test_bad_input_is_one_line(sae_dir, tmp_path, capsys, extra, message):
    assert _edit(sae_dir, tmp_path / "bad", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vitsae edit: error:") and message in err and "\n" not in err


def test_refuses_to_write_into_the_sae_folder(sae_dir, capsys):
    assert _edit(sae_dir, sae_dir / "out", "--ablate", "1") == 2
    assert "inputs are read-only" in capsys.readouterr().err


def test_patch_from_a_donor_in_a_box(sae_dir, tmp_path):
    args = ["--patch", "1,2,3,4,5", "--donor", "3", "--box", "0", "0", "32", "32", "--no-controls"]
    assert _edit(sae_dir, tmp_path / "p", *args) == 0
    record = json.loads((tmp_path / "p" / "edit.json").read_text())
    (edit,) = edits_from_json(record["edits"])
    assert edit.op == "patch" and edit.where.box == (0.0, 0.0, 32.0, 32.0) and record["config"]["donor"] == 3
    assert set(record["results"]) == {"edit"}


def test_refuses_to_write_into_the_model_folder(sae_dir, capsys):
    from vitsae.models import checkpoints_dir

    assert _edit(sae_dir, checkpoints_dir() / "shapes-vit" / "edit", "--ablate", "1") == 2
    assert "inputs are read-only" in capsys.readouterr().err
    assert not (checkpoints_dir() / "shapes-vit" / "edit").exists()
