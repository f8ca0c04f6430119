"""Artifacts are data (issue 11): a `module:` model spec read from a file is never imported, only one the user
gives; an SAE paired with another model's store or model is refused, naming both, unless the user says so."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import harvest_small_store, tiny_sae
from vitsae.analysis.compute import compute_feature_stats
from vitsae.analysis.stats import StatsConfig
from vitsae.cli import main
from vitsae.models import HookedViT, load_recorded, recorded_spec
from vitsae.models.load import UntrustedModelSpec, runs_code
from vitsae.sae.io import save_sae
from vitsae.sae.provenance import ModelMismatch, check_same_model


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return harvest_small_store(tmp_path_factory.mktemp("trust")).path


def with_manifest_model(store_dir: Path, out: Path, spec: str, weights_hash: str | None = None) -> Path:
    """A copy of the store whose manifest records the model `spec` (and `weights_hash`)."""
    shutil.copytree(store_dir, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["model"]["spec"] = spec
    if weights_hash is not None:
        manifest["model"]["weights_hash"] = weights_hash
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("vitsae")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"vitsae {command}: error: "), err
    return lines[0]


def test_the_trust_rule() -> None:
    for spec in ("module:os:abort", "random:module:os:abort", "random:random:module:x:y"):
        assert runs_code(spec)
        with pytest.raises(UntrustedModelSpec, match=rf"pass --model {spec} yourself if you trust it"):
            recorded_spec(spec, "some/manifest.json")
        with pytest.raises(UntrustedModelSpec, match="some/manifest.json records the model"):
            load_recorded(spec, None, "some/manifest.json")
    assert not runs_code("vitsae:shapes-vit") and not runs_code("hf:/models/module:x")
    with pytest.raises(ValueError, match="records no model spec; pass --model"):
        recorded_spec("", "sae.json")
    # the same spec given by the user (typed, or passed in Python) loads
    model = load_recorded("module:os:abort", "module:tests.helpers:tiny_vit", "some/manifest.json")
    assert isinstance(model, HookedViT)


def test_stats_never_imports_the_model_a_store_records(tmp_path, store_dir, capsys) -> None:
    """Before: `vitsae stats` loaded the manifest's spec for the logit effects; `module:os:abort` aborted."""
    store = with_manifest_model(store_dir, tmp_path / "store", "module:os:abort")
    save_sae(tiny_sae(), tmp_path / "sae")
    argv = ["stats", "--store", str(store), "--sae", str(tmp_path / "sae"), "--out", str(tmp_path / "stats")]
    assert main([*argv, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "no logit effects" in err and "vitsae does not run code named in a file" in err
    assert "pass --model module:os:abort yourself" in err


def test_ablation_never_imports_the_model_the_statistics_record(tmp_path, store_dir, capsys) -> None:
    from vitsae.store import ActivationStore

    sae = tiny_sae()
    save_sae(sae, tmp_path / "sae")
    stats = compute_feature_stats(ActivationStore.open(store_dir), sae, StatsConfig(k_images=2))
    stats.meta["sae"] = str(tmp_path / "sae")
    stats.meta["model"] = {"spec": "module:os:abort"}
    stats.save(tmp_path / "stats")
    assert main(["ablation", "--stats", str(tmp_path / "stats"), "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err, "ablation")
    assert f"{tmp_path / 'stats' / 'feature_stats.json'} records the model 'module:os:abort'" in line
    assert "pass --model module:os:abort" in line


def test_an_sae_of_another_model_is_refused_naming_both(tmp_path, store_dir, capsys) -> None:
    store = with_manifest_model(store_dir, tmp_path / "store", "hf:/models/clip", weights_hash="c" * 64)
    sae = tiny_sae().with_config(model_spec="vitsae:shapes-vit", model_weights_hash="a" * 64)
    save_sae(sae, tmp_path / "sae")
    argv = ["stats", "--store", str(store), "--sae", str(tmp_path / "sae"), "--out", str(tmp_path / "stats")]
    assert main([*argv, "--no-progress", "--model", "none"]) == 2
    line = one_error_line(capsys.readouterr().err, "stats")
    assert "was trained on 'vitsae:shapes-vit' (weights sha256 aaaaaaaaaaaa...)" in line
    assert f"the store {store} holds 'hf:/models/clip' (weights sha256 cccccccccccc...)" in line
    assert "--allow-other-model" in line
    assert not (tmp_path / "stats" / "feature_stats.json").exists()
    assert main([*argv, "--no-progress", "--model", "none", "--allow-other-model"]) == 0


def test_the_model_check_compares_hashes_then_specs() -> None:
    cfg = tiny_sae().with_config(model_spec="vitsae:a", model_weights_hash="1" * 64).cfg
    check_same_model(cfg, "sae", "hf:/elsewhere/a", "1" * 64, "store")  # one model under two specs
    with pytest.raises(ModelMismatch):
        check_same_model(cfg, "sae", "vitsae:a", "2" * 64, "store")
    check_same_model(cfg, "sae", "vitsae:a", "2" * 64, "store", allow=True)
    older = tiny_sae().with_config(model_spec="vitsae:a").cfg  # no hash recorded: the specs decide
    with pytest.raises(ModelMismatch):
        check_same_model(older, "sae", "vitsae:b", "2" * 64, "store")
    check_same_model(tiny_sae().cfg, "sae", "vitsae:b", "2" * 64, "store")  # nothing recorded


def test_training_on_a_store_records_its_model_and_weights_hash(tmp_path, store_dir) -> None:
    argv = ["train", "--store", str(store_dir), "--out", str(tmp_path / "run"), "--batch-size", "16"]
    argv += ["--total-tokens", "64", "--expansion-factor", "2", "--no-progress", "--no-plot"]
    assert main(argv) == 0
    (name,) = json.loads((tmp_path / "run" / "sweep.json").read_text())
    recorded = json.loads((tmp_path / "run" / name / "sae.json").read_text())["config"]
    manifest = json.loads((store_dir / "manifest.json").read_text())
    assert recorded["model_weights_hash"] == manifest["model"]["weights_hash"] != ""
    assert recorded["model_spec"] == manifest["model"]["spec"]
