"""Network Dissection: IoU against hand-computed masks, thresholds, bootstrap, baselines, inputs, the CLI."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from vitsae.analysis.dissection import (
    ConceptTally,
    DenseBasis,
    DissectConfig,
    Dissection,
    DissectionError,
    Run,
    SAEBasis,
    bootstrap_iou_interval,
    check_sae_for_hook,
    dissect,
    iou_from_tallies,
    maps_to_masks,
    masks_to_grid,
    quantile_from_histogram,
    quantile_of_nonzero,
    random_rotation,
)
from vitsae.data.concepts import ConceptMaskError, MaskFolderSource, open_concept_source
from vitsae.data.preprocess import Preprocess
from vitsae.data.shapes import ShapesDataset
from vitsae.models import HookedViT, HookedViTConfig
from vitsae.models.randomize import randomized
from vitsae.sae.config import SAEConfig
from vitsae.sae.model import SparseAutoencoder
from vitsae.tokens import TokenLayout

# --- a model whose two units are the red and green channels, averaged over 4x4 patches of 16x16 images ---


class ChannelModel:
    """`collect` gives 16 patch tokens of width 2: the mean red and green of each 4x4 patch (0..1)."""

    preprocess = Preprocess(size=(16, 16), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    def token_layout(self, hook: str) -> TokenLayout:
        return TokenLayout(0, 0, (4, 4), 2)

    def collect(self, pixels_BCHW: torch.Tensor, hooks: list[str]) -> dict[str, torch.Tensor]:
        pooled = torch.nn.functional.avg_pool2d(pixels_BCHW[:, :2], 4)  # (B, 2, 4, 4)
        return {hooks[0]: pooled.flatten(2).transpose(1, 2)}


class PlantedSource:
    """Images with a red block and a green block at known patch-aligned places; masks say where they are."""

    concepts = ("red", "green", "sky")

    def __init__(self) -> None:
        self.images, self.masks_ = [], []
        boxes = [
            ((0, 8, 0, 8), (8, 16, 8, 16)),
            ((4, 12, 4, 8), (0, 4, 0, 16)),
            ((12, 16, 0, 16), (0, 4, 4, 12)),
        ]
        for red_box, green_box in boxes:
            image = np.zeros((16, 16, 3), dtype=np.uint8)
            red = np.zeros((16, 16), dtype=bool)
            green = np.zeros((16, 16), dtype=bool)
            red[red_box[0] : red_box[1], red_box[2] : red_box[3]] = True
            green[green_box[0] : green_box[1], green_box[2] : green_box[3]] = True
            image[red, 0] = 255
            image[green, 1] = 255
            self.images.append(image)
            self.masks_.append({"red": red, "green": green})

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return SimpleNamespace(image=Image.fromarray(self.images[index]), label=None, key=f"planted/{index}")

    def key(self, index: int) -> str:
        return f"planted/{index}"

    def describe(self) -> dict:
        return {"kind": "planted"}

    def masks(self, index: int) -> dict[str, np.ndarray]:
        return self.masks_[index]


def _fixed_thresholds(n_units: int, value: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.full((n_units,), value), torch.zeros(n_units, dtype=torch.long), torch.zeros(n_units)


def test_planted_channels_have_iou_one_at_grid_and_pixel_resolution() -> None:
    source = PlantedSource()
    for resolution in ("grid", "nearest"):
        config = DissectConfig(resolution=resolution, n_bootstrap=50)
        run = Run(ChannelModel(), [DenseBasis(2, "neurons")], {"neurons": 0.5})
        result = dissect(
            [run], "h", source, config, thresholds={"neurons": _fixed_thresholds(2, 0.5)}, batch_size=2
        )
        iou = result.iou("neurons")
        assert torch.allclose(iou, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64))
        records = result.unit_records("neurons")
        assert [r["concept"] for r in records] == ["red", "green"]
        assert records[0]["ci"] == [1.0, 1.0]
        assert records[0]["pixel_precision"] == records[0]["detection_recall"] == 1.0
        assert result.summary("neurons")["concepts_present"] == 2  # "sky" never appears
        assert result.concept_records("neurons")[1]["unit"] == 1


def test_iou_matches_a_hand_computed_example() -> None:
    """Two images, one unit, two concepts, counted by hand."""
    tally = ConceptTally(n_units=1, n_concepts=2, n_blocks=2)
    area_C = torch.zeros(2, dtype=torch.long)
    # image 0 (4 pixels): unit on at pixels {0, 1}; concept 0 at {1, 2}; concept 1 at {3}
    tally.add(0, torch.tensor([0]), torch.tensor([2]), torch.tensor([[1, 0]]), torch.tensor([0, 1]))
    area_C += torch.tensor([2, 1])
    # image 1: unit on at {0, 1, 2, 3}; only concept 0, at {0}
    tally.add(1, torch.tensor([0]), torch.tensor([4]), torch.tensor([[1]]), torch.tensor([0]))
    area_C[0] += 1
    iou = iou_from_tallies(tally.inter_GUC.sum(0), tally.area_GU.sum(0), area_C)
    # concept 0: intersections 1 + 1 = 2; unions |{0,1,2}| + |{0,1,2,3}| = 3 + 4 = 7
    # concept 1: intersections 0 + 0; unions |{0,1,3}| + |{0,1,2,3}| = 3 + 4 = 7
    assert iou[0, 0].item() == pytest.approx(2 / 7)
    assert iou[0, 1].item() == 0.0
    assert tally.fired_U.tolist() == [2]
    assert tally.both_UC.tolist() == [[2, 1]]


def test_quantile_of_nonzero_matches_numpy_and_ignores_zeros() -> None:
    rng = np.random.default_rng(0)
    values = rng.exponential(size=300).astype(np.float32)
    units = rng.integers(0, 3, size=300)
    values[rng.random(300) < 0.5] = 0.0
    thresholds, counts = quantile_of_nonzero(torch.from_numpy(units), torch.from_numpy(values), 4, 0.7)
    for u in range(3):
        nonzero = values[(units == u) & (values != 0)]
        assert counts[u].item() == nonzero.size
        assert thresholds[u].item() == pytest.approx(np.quantile(nonzero.astype(np.float64), 0.7), rel=1e-6)
    assert math.isinf(thresholds[3].item()) and counts[3].item() == 0


def test_sparse_feature_gets_a_positive_threshold_where_the_all_activation_quantile_is_zero() -> None:
    """Firing on 0.1% of patches: NetDissect's top-0.5% quantile is 0, the nonzero quantile is not."""
    values = np.zeros(10_000, dtype=np.float32)
    values[:10] = np.arange(1, 11)
    assert np.quantile(values, 0.995) == 0.0
    threshold, _ = quantile_of_nonzero(
        torch.zeros(10_000, dtype=torch.long), torch.from_numpy(values), 1, 0.5
    )
    assert threshold.item() == pytest.approx(5.5)


def test_quantile_from_histogram_on_log_uniform_activations() -> None:
    edges = torch.logspace(-3, 3, 49, dtype=torch.float64)
    values = torch.from_numpy(np.logspace(0, 2, 20_001))  # log-uniform on [1, 100]
    inner = edges[1:-1].float()
    hist = torch.bincount(torch.bucketize(values.float(), inner, right=True), minlength=48)[None]
    for q in (0.25, 0.5, 0.8):
        got = quantile_from_histogram(hist, edges, torch.tensor([100.0]), q).item()
        assert got == pytest.approx(10 ** (2 * q), rel=0.02)
    assert math.isinf(quantile_from_histogram(torch.zeros((1, 48)), edges, torch.zeros(1), 0.5).item())


def test_bootstrap_interval_is_fixed_by_its_seed_and_brackets_the_estimate() -> None:
    generator = torch.Generator().manual_seed(3)
    area = torch.randint(50, 100, (20, 4), generator=generator)
    concept_area = torch.randint(50, 100, (20, 4), generator=generator)
    inter = (torch.minimum(area, concept_area).double() * torch.rand((20, 4), generator=generator)).long()
    first = bootstrap_iou_interval(inter, area, concept_area, 500, 0.9, seed=7)
    again = bootstrap_iou_interval(inter, area, concept_area, 500, 0.9, seed=7)
    other = bootstrap_iou_interval(inter, area, concept_area, 500, 0.9, seed=8)
    assert torch.equal(first, again) and not torch.equal(first, other)
    estimate = inter.sum(0).double() / (area.sum(0) + concept_area.sum(0) - inter.sum(0)).double()
    assert ((first[:, 0] <= estimate) & (estimate <= first[:, 1])).all()
    # identical blocks: every resample has the same ratio, the interval collapses onto it
    same = bootstrap_iou_interval(
        inter[:1].repeat(20, 1), area[:1].repeat(20, 1), concept_area[:1].repeat(20, 1), 50, 0.9, 0
    )
    point = inter[0].double() / (area[0] + concept_area[0] - inter[0]).double()
    assert torch.allclose(same[:, 0].double(), point, atol=1e-6) and torch.allclose(
        same[:, 1].double(), point, atol=1e-6
    )


def test_random_rotation_preserves_the_span_and_depends_on_the_seed() -> None:
    q = random_rotation(12, seed=0).double()
    assert torch.allclose(q @ q.T, torch.eye(12, dtype=torch.float64), atol=1e-5)
    acts = torch.randn(50, 12, dtype=torch.float64)
    rotated = acts @ q
    assert torch.allclose(rotated @ q.T, acts, atol=1e-5)  # nothing lost: the same span
    assert torch.linalg.matrix_rank(torch.cat([acts, rotated])) == 12
    assert not torch.allclose(q, random_rotation(12, seed=1).double())
    basis = DenseBasis(12, "rotated", q.float())
    assert torch.allclose(basis.prepare(acts.float()[None])[0].double(), rotated, atol=1e-5)


def test_bilinear_upsampling_matches_the_pil_reference() -> None:
    maps = torch.rand(3, 4, 5)
    fast = maps_to_masks(maps, (16, 20), "bilinear")
    for a in range(3):
        pil = Image.fromarray(maps[a].numpy(), mode="F").resize((20, 16), Image.Resampling.BILINEAR)
        reference = np.asarray(pil, dtype=np.float32)
        assert np.allclose(fast[a].numpy(), reference, atol=1e-5)
    nearest = maps_to_masks(maps, (8, 10), "nearest")
    assert torch.equal(nearest, maps.repeat_interleave(2, 1).repeat_interleave(2, 2))


def test_masks_pool_to_the_grid_by_majority() -> None:
    masks = torch.zeros((1, 4, 4), dtype=torch.bool)
    masks[0, :2, :2] = True  # the top-left 2x2 block: fully in
    masks[0, 2, 2] = True  # one pixel of four: out
    masks[0, 0, 2:4] = True  # two of four: in (at least half)
    assert masks_to_grid(masks, (2, 2)).tolist() == [[[True, True], [False, False]]]


def test_sae_basis_maps_hold_each_patch_activation() -> None:
    sae = SparseAutoencoder(SAEConfig(d_in=4, expansion_factor=2, architecture="topk", k=2))
    acts = torch.randn(1, 6, 4)
    units, maps = SAEBasis(sae).image_maps(SAEBasis(sae).prepare(acts), 0)
    dense = sae.encode_sparse(acts[0]).to_dense(8)
    assert torch.allclose(maps, dense[:, units].T)
    assert (dense[:, [u for u in range(8) if u not in units.tolist()]] == 0).all()


def _tiny_vit() -> HookedViT:
    cfg = HookedViTConfig(
        d_model=16, n_layers=2, n_heads=2, d_mlp=32, image_size=(32, 32), patch_size=8, head_out=3
    )
    model = HookedViT(cfg, Preprocess(size=(32, 32)))
    model.init_weights(0.3)
    return model.eval()


def test_dissect_on_shapes_with_an_sae_writes_a_versioned_result(tmp_path) -> None:
    hook = "blocks.1.hook_resid_post"
    model = _tiny_vit()
    sae = SparseAutoencoder(
        SAEConfig(d_in=16, expansion_factor=2, architecture="topk", k=4, hook_name=hook)
    ).eval()
    source = ShapesDataset(n_images=6, image_size=32)
    run = Run(model, [SAEBasis(sae), DenseBasis(16, "neurons")], {"sae": 0.5, "neurons": 0.9})
    config = DissectConfig(n_bootstrap=20, bootstrap_blocks=3, threshold_images=4)
    seen = []
    result = dissect([run], hook, source, config, batch_size=4, on_image=lambda *a: seen.append(a[:2]))
    assert result.n_images == 6 and result.n_pixels == 6 * 32 * 32
    assert len(seen) == 12
    assert result.iou("sae").shape == (32, 25)
    assert torch.equal(
        result.area_C,
        sum(
            torch.tensor([source.masks(i).get(c, np.zeros(1)).sum() for c in source.concepts])
            for i in range(6)
        ),
    )
    result.save(tmp_path)
    loaded = Dissection.load(tmp_path)
    assert torch.allclose(loaded.iou("sae"), result.iou("sae"))
    assert loaded.unit_records("neurons") == result.unit_records("neurons")
    info = __import__("json").loads((tmp_path / "dissection.json").read_text())
    assert info["format"] == "vitsae.dissection" and info["format_version"] == 1
    assert set(info["bases"]) == {"sae", "neurons"}


def test_randomized_model_redraws_every_weight_and_is_seeded() -> None:
    model = _tiny_vit()
    first, again = randomized(model, seed=0), randomized(model, seed=0)
    for (name, trained), random_a, random_b in zip(
        model.named_parameters(), first.parameters(), again.parameters(), strict=True
    ):
        assert torch.equal(random_a, random_b), name
        if trained.numel() > 1 and trained.std() > 0:
            assert not torch.equal(trained, random_a), name
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with torch.no_grad():
        conv[1].weight.fill_(3.0)
    redrawn = randomized(conv, seed=0)
    assert not torch.equal(redrawn[0].weight, conv[0].weight) and (redrawn[1].weight == 1).all()


# --- bad input --------------------------------------------------------------------------------------------


def _write_png(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_mask_folder_reads_both_layouts(tmp_path) -> None:
    image = np.zeros((6, 8, 3), dtype=np.uint8)
    sky = np.zeros((6, 8), dtype=np.uint8)
    sky[:2] = 255
    _write_png(tmp_path / "a" / "images" / "cls" / "x.png", image)
    _write_png(tmp_path / "a" / "masks" / "cls" / "x" / "sky.png", sky)
    source = MaskFolderSource(tmp_path / "a")
    assert source.concepts == ("sky",) and source.masks(0)["sky"].sum() == 16
    labels = np.zeros((6, 8), dtype=np.uint8)
    labels[:, 4:] = 3
    _write_png(tmp_path / "b" / "images" / "x.png", image)
    _write_png(tmp_path / "b" / "labels" / "x.png", labels)
    (tmp_path / "b" / "concepts.csv").write_text("value,concept\n0,\n3,tree\n")
    masks = open_concept_source(str(tmp_path / "b")).masks(0)
    assert list(masks) == ["tree"] and masks["tree"].sum() == 24


def test_bad_concept_inputs_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(ConceptMaskError, match="has no concept masks"):
        open_concept_source("folder:/nowhere")
    image = np.zeros((6, 8, 3), dtype=np.uint8)
    _write_png(tmp_path / "size" / "images" / "x.png", image)
    _write_png(tmp_path / "size" / "masks" / "x" / "sky.png", np.zeros((5, 8), dtype=np.uint8))
    with pytest.raises(ConceptMaskError, match=r"is 8x5 \(WxH\) but its image .* is 8x6"):
        MaskFolderSource(tmp_path / "size").masks(0)
    _write_png(tmp_path / "table" / "images" / "x.png", image)
    _write_png(tmp_path / "table" / "labels" / "x.png", np.full((6, 8), 7, dtype=np.uint8))
    (tmp_path / "table" / "concepts.csv").write_text("value,concept\n0,sky\n")
    with pytest.raises(ConceptMaskError, match=r"holds values \[7\] that .*concepts.csv does not name"):
        MaskFolderSource(tmp_path / "table").masks(0)
    (tmp_path / "table" / "concepts.csv").write_text("val,name\n")
    with pytest.raises(ConceptMaskError, match="header 'value,concept'"):
        MaskFolderSource(tmp_path / "table")
    (tmp_path / "none" / "images").mkdir(parents=True)
    with pytest.raises(ConceptMaskError, match="neither of masks/ and labels/"):
        MaskFolderSource(tmp_path / "none")


def test_an_sae_of_another_hook_or_width_is_refused() -> None:
    sae = SparseAutoencoder(SAEConfig(d_in=16, hook_name="blocks.0.hook_resid_post"))
    with pytest.raises(DissectionError, match="trained on hook 'blocks.0.hook_resid_post', not 'blocks.1"):
        check_sae_for_hook(sae, "blocks.1.hook_resid_post", 16)
    with pytest.raises(DissectionError, match="d_in=16; hook 'blocks.0.hook_resid_post' has width 32"):
        check_sae_for_hook(sae, "blocks.0.hook_resid_post", 32)
    with pytest.raises(DissectionError, match="quantile must be in"):
        DissectConfig(quantile=1.0)


def test_cli_errors_are_one_line(tmp_path, capsys) -> None:
    from vitsae.cli import main

    code = main(
        ["dissect", "--sae", str(tmp_path), "--source", "folder:/nowhere", "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("vitsae dissect: error:") and "\n" not in err


def test_randomized_wrapped_module_hooks_its_own_copy() -> None:
    from vitsae.models.wrap import HookedModule

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    model = HookedModule(net, Preprocess(size=(8, 8)))
    pixels = torch.randn(2, 3, 8, 8)
    before = model.collect(pixels, ["0"])["0"]
    copy = randomized(model, seed=1)  # seed 0 would redraw the very weights the autouse seed drew
    assert copy.hook_names() == model.hook_names()
    assert not torch.allclose(copy.collect(pixels, ["0"])["0"], before)
    assert torch.equal(model.collect(pixels, ["0"])["0"], before)  # the original is untouched


def test_thresholds_from_stats_agree_with_the_exact_first_pass_quantile() -> None:
    from vitsae.analysis.dissection import thresholds_from_stats
    from vitsae.analysis.stats import FeatureStatsAccumulator, StatsConfig

    generator = torch.Generator().manual_seed(0)
    n_images, n_tokens = 40, 16
    indices = torch.randint(0, 3, (n_images * n_tokens, 2), generator=generator)
    values = torch.exp(torch.randn(n_images * n_tokens, 2, generator=generator))  # log-normal activations
    indices[:, 1] = (indices[:, 0] + 1) % 3  # two distinct features per token
    acc = FeatureStatsAccumulator(3, TokenLayout(0, 0, (4, 4), 2), StatsConfig(hist_bins=192))
    image = torch.arange(n_images).repeat_interleave(n_tokens)
    acc.update(indices, values, image, torch.arange(n_tokens).repeat(n_images), torch.full_like(image, -1))
    thresholds, nonzero, rate = thresholds_from_stats(acc.finish({}), 0.5)
    exact, counts = quantile_of_nonzero(indices.reshape(-1), values.reshape(-1), 3, 0.5)
    assert torch.allclose(thresholds, exact, rtol=0.06)  # 192 bins over 6 decades: 7.5% wide
    assert (nonzero == -1).all() and torch.allclose(rate.double(), counts.double() / (n_images * n_tokens))
