"""`vitsae trace` end to end on the tiny ViT, and each bad input as a one-line error."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tests.helpers import random_sae
from vitsae.circuits.files import read_graph
from vitsae.cli import main
from vitsae.sae.io import save_sae

MODEL = "module:tests.helpers:tiny_vit"
SOURCE = "shapes:8:0:32"


@pytest.fixture(scope="module")
def saes(tmp_path_factory):
    root = tmp_path_factory.mktemp("saes")
    out = {}
    for i, hook in enumerate(
        ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.2.hook_resid_post")
    ):
        out[i] = root / f"sae{i}"
        save_sae(random_sae(32, hook, seed=i), out[i])
    foreign = random_sae(32, "blocks.1.hook_resid_post", seed=5)
    foreign.cfg = replace(foreign.cfg, model_weights_hash="f" * 64, model_spec="hf:elsewhere")
    out["foreign"] = root / "foreign"
    save_sae(foreign, out["foreign"])
    return out


def trace(tmp_path, saes_args, target, *extra):
    args = ["trace", "--model", MODEL, "--source", SOURCE, "--target", target, "--images", "8"]
    args += ["--batch-size", "4", "--out", str(tmp_path / "graph"), "--no-progress", "--confirm", "3"]
    for sae in saes_args:
        args += ["--sae", str(sae)]
    return main(args + list(extra))


def test_trace_writes_the_graph_its_page_and_picture(tmp_path, saes, capsys):
    browser = tmp_path / "browser1"
    browser.mkdir()
    code = trace(tmp_path, [saes[0], saes[1]], "class:1", "--browser", "-", str(browser))
    assert code == 0, capsys.readouterr().err
    out = tmp_path / "graph"
    record, tensors = read_graph(out)
    assert record["format"] == "vitsae.circuit_graph" and record["format_version"] == 1
    assert record["provenance"]["model"]["spec"] == MODEL
    assert [c["hook"] for c in record["columns"]] == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert record["target"]["id"] == "logit:1"
    assert "attribution.blocks.0.hook_resid_post" in tensors
    assert {"errors_kept", "errors_ablated", "sizes"} <= set(record["faithfulness"])
    links = json.loads((out / "features.json").read_text())
    assert links["format"] == "vitsae.circuit_features"
    some = next(iter(links["saes"]["blocks.1.hook_resid_post"]["features"].values()))
    assert some["upstream"] or some["downstream"]
    assert (out / "graph.png").stat().st_size > 1000
    assert (out / "faithfulness.png").stat().st_size > 1000
    assert "feature.html#" in (out / "graph.html").read_text()
    assert "-> " in capsys.readouterr().out


def test_a_feature_target(tmp_path, saes):
    assert trace(tmp_path, [saes[0]], f"feature:{saes[1]}:7", "--aggregate", "top", "--top-r", "2") == 0
    record, _ = read_graph(tmp_path / "graph")
    assert record["target"]["id"] == "blocks.1.hook_resid_post:7"
    assert [c["role"] for c in record["columns"]] == ["source", "target"]


@pytest.mark.parametrize(
    "which, target, message",
    [
        ((1, 0), "class:1", "not in forward order"),
        ((1, 1), "class:1", "two SAEs at the same hook 'blocks.1.hook_resid_post'"),
        ((0,), "feature:{1}:128", "feature 128 out of range"),
        ((0,), "feature:{1}:-1", "feature -1 out of range"),
        ((0, 1), "class:zebra", "unknown class 'zebra'"),
        ((0, "foreign"), "class:1", "trained on another model's activations"),
        ((0, 1, 2), "feature:{1}:3", "a feature target must be the last SAE"),
        ((0, 2), "feature:{1}:3", "not in forward order"),
        ((0,), "logit:3", "expected class:NAME"),
    ],
)
def test_bad_input_is_one_line(tmp_path, saes, capsys, which, target, message):
    code = trace(tmp_path, [saes[w] for w in which], target.format(*[saes[i] for i in range(3)]))
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("vitsae trace: error: ") and message in err and "\n" not in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--stats", "x"], "1 --stats folders for 2 --sae folders"),
        (["--browser", "a", "b", "c"], "3 --browser folders for 2 --sae folders"),
        (["--nodes", "0"], "--nodes 0"),
    ],
)
def test_bad_options_are_one_line(tmp_path, saes, capsys, extra, message):
    assert trace(tmp_path, [saes[0], saes[1]], "class:1", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vitsae trace: error: ") and message in err
