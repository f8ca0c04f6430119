"""Harvesting: rows equal the model's activations, the manifest is right, bad input is handled."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import shapes, tiny_vit
from tests.store.store_worker import HOOKS, N_IMAGES, config, reference_rows
from vitsae.data import FolderSource, ImageLoader
from vitsae.fileio import read_json
from vitsae.store import ActivationStore, HarvestConfig, StoreError, harvest

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_rows_equal_run_with_cache(tmp_path: Path, harvested: Path, dtype: str) -> None:
    model, source = tiny_vit(), shapes(N_IMAGES)
    out = harvested if dtype == "float16" else tmp_path
    if dtype != "float16":
        harvest(config(tmp_path, N_IMAGES, dtype=dtype), model=model, source=source)
    for hook in HOOKS:
        store = ActivationStore.open(out / hook)
        expected, images, tokens = reference_rows(model, source, hook, list(range(17)), DTYPES[dtype])
        assert store.dtype == dtype and len(store) == N_IMAGES * 17
        assert torch.equal(store[:], expected)
        stored_images, stored_tokens = store.provenance(np.arange(len(store)))
        assert np.array_equal(stored_images, images) and np.array_equal(stored_tokens, tokens)


def test_manifest_describes_the_store(harvested: Path) -> None:
    model = tiny_vit()
    for hook in HOOKS:
        manifest = read_json(harvested / hook / "manifest.json")
        assert manifest["format_version"] == 1 and manifest["hook"] == hook
        assert manifest["model"]["weights_hash"] == model.weights_hash()
        assert manifest["source"] == shapes(N_IMAGES).describe()
        assert manifest["token_layout"] == {"n_cls": 1, "n_registers": 0, "grid_hw": [4, 4]}
        assert manifest["width"] == 32 and manifest["counts"]["rows"] == N_IMAGES * 17
        assert manifest["preprocess"]["size"] == [32, 32]
        assert [s["images"] for s in manifest["shards"]] == [[i, i + 4] for i in range(0, N_IMAGES, 4)]
        for shard in manifest["shards"]:
            data = (harvested / hook / shard["file"]).read_bytes()
            assert len(data) == shard["bytes"] and hashlib.sha256(data).hexdigest() == shard["sha256"]
        rows_RD = ActivationStore.open(harvested / hook)[:].double().numpy()
        np.testing.assert_allclose(manifest["stats"]["mean"], rows_RD.mean(0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(
            manifest["stats"]["mean_norm"], np.linalg.norm(rows_RD, axis=1).mean(), rtol=1e-12
        )
        sidecars = sorted(p.name for p in (harvested / hook / ".progress").iterdir())
        assert sidecars == [f"{s['file']}.json" for s in manifest["shards"]]
    assert read_json(harvested / "harvest.json")["config"]["hooks"] == list(HOOKS)


@pytest.mark.parametrize(
    ("tokens", "registers", "expected"),
    [
        ("all", False, [0, *range(3, 19)]),
        ("all", True, list(range(19))),
        ("patches", False, list(range(3, 19))),
        ("cls", False, [0]),
    ],
)
def test_token_selection_excludes_registers_by_default(
    tmp_path: Path, tokens: str, registers: bool, expected: list[int]
) -> None:
    model, source = tiny_vit(n_registers=2), shapes(4)
    cfg = config(tmp_path, 4, hooks=(HOOKS[0],), tokens=tokens, include_registers=registers)
    harvest(cfg, model=model, source=source)
    store = ActivationStore.open(tmp_path / HOOKS[0])
    assert store.manifest["tokens"]["token_indices"] == expected
    reference, _, token_R = reference_rows(model, source, HOOKS[0], expected, torch.float16)
    assert torch.equal(store[:], reference)
    assert np.array_equal(store.provenance(np.arange(len(store)))[1], token_R)


def test_different_config_is_refused_naming_the_fields(harvested: Path) -> None:
    changed = config(harvested, N_IMAGES, dtype="bfloat16", batch_size=8)
    with pytest.raises(StoreError, match="(?s)differing fields.*batch_size.*dtype"):
        harvest(changed, model=tiny_vit(), source=shapes(N_IMAGES))
    with pytest.raises(StoreError, match="model_hash"):
        harvest(config(harvested, N_IMAGES), model=tiny_vit(seed=1), source=shapes(N_IMAGES))
    with pytest.raises(StoreError, match="source"):
        harvest(config(harvested, N_IMAGES), model=tiny_vit(), source=shapes(N_IMAGES + 1))
    before = {p: p.stat().st_mtime_ns for p in harvested.rglob("*")}
    harvest(config(harvested, N_IMAGES, num_workers=1), model=tiny_vit(), source=shapes(N_IMAGES))
    assert {p: p.stat().st_mtime_ns for p in harvested.rglob("*")} == before


def test_unknown_hook_lists_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="blocks.0.hook_resid_pots.*Valid hook names"):
        harvest(config(tmp_path, 4, hooks=("blocks.0.hook_resid_pots",)), model=tiny_vit(), source=shapes(4))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="repeat"):
        config(Path("x"), 4, hooks=(HOOKS[0], HOOKS[0]))
    with pytest.raises(ValueError, match="valid: \\['float16', 'bfloat16', 'float32'\\]"):
        HarvestConfig(model="m", source="s", hooks=(HOOKS[0],), out=Path("x"), dtype="int8")


def test_bad_images_are_skipped_and_listed(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(9):
        Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    (folder / "img3.png").write_bytes(b"not a png at all")
    (folder / "img4.png").write_bytes((folder / "img5.png").read_bytes()[:60])
    source = FolderSource(folder)
    model = tiny_vit()
    harvest(
        config(tmp_path / "out", len(source), source=str(folder), hooks=(HOOKS[0],)),
        model=model,
        source=source,
    )
    store = ActivationStore.open(tmp_path / "out" / HOOKS[0])
    skipped = store.manifest["skipped"]
    assert [(s["index"], s["key"]) for s in skipped] == [(3, "img3.png"), (4, "img4.png")]
    assert all(s["reason"] for s in skipped)
    assert store.manifest["counts"]["images_skipped"] == 2 and len(store) == 7 * 17
    images = store.provenance(np.arange(len(store)))[0]
    assert sorted(set(images.tolist())) == [0, 1, 2, 5, 6, 7, 8]
    expected, _, _ = reference_rows(model, source, HOOKS[0], list(range(17)), torch.float16)
    assert torch.equal(store[:], expected)


def test_cnn_stores_every_spatial_position(tmp_path: Path) -> None:
    from transformers import ResNetConfig, ResNetModel

    from vitsae.data import Preprocess
    from vitsae.models import load

    torch.manual_seed(0)
    ResNetModel(
        ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    ).save_pretrained(tmp_path / "resnet")
    with pytest.warns(UserWarning, match="no preprocessing"):
        model = load(f"hf:{tmp_path / 'resnet'}")
    model.preprocess = Preprocess(size=(32, 32))
    hooks = ("encoder.stages.0", "encoder.stages.1")
    source = shapes(6)
    with pytest.raises(ValueError, match="needs a class token"):
        harvest(config(tmp_path / "cls", 6, hooks=hooks, tokens="cls"), model=model, source=source)
    harvest(config(tmp_path / "out", 6, hooks=hooks), model=model, source=source)
    for hook, (grid, width) in zip(hooks, [(8, 8), (4, 16)], strict=True):
        store = ActivationStore.open(tmp_path / "out" / hook)
        assert store.manifest["token_layout"] == {"n_cls": 0, "n_registers": 0, "grid_hw": [grid, grid]}
        assert store.d_model == width and len(store) == 6 * grid * grid
        expected = []
        for batch in ImageLoader(source, model.preprocess, batch_size=4):
            _, cache = model.run_with_cache(batch.pixels_BCHW, names_filter=[hook])
            maps_BCHW = cache[hook]
            expected.append(maps_BCHW.flatten(2).transpose(1, 2).reshape(-1, width).half().float())
        assert torch.equal(store[:], torch.cat(expected))
        where = store.locate([grid * grid + grid + 2])
        assert (where["image_index"][0], where["patch_row"][0], where["patch_col"][0]) == (1, 1, 2)
