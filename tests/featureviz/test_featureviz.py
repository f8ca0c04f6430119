"""Feature visualisation: objectives against hand-computed values, parametrisations, and the loop itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.helpers import tiny_vit
from vitsae.cli import main
from vitsae.data.sources import ArraySource
from vitsae.featureviz import (
    Augment,
    ClassLogit,
    Direction,
    FourierImage,
    ImageStatistics,
    MacoImage,
    Neuron,
    PixelImage,
    SAEFeature,
    Site,
    combine,
    evaluate,
    optimize,
)
from vitsae.featureviz.objectives import ObjectiveError, diversity_B
from vitsae.featureviz.params import ImageStatisticsError
from vitsae.sae import SAEConfig, SparseAutoencoder, save_sae
from vitsae.tokens import TokenLayout

HOOK = "blocks.1.hook_resid_post"


def tiny_sae(d_in: int = 32, architecture: str = "topk", hook: str = HOOK) -> SparseAutoencoder:
    cfg = SAEConfig(
        d_in=d_in, expansion_factor=3, architecture=architecture, k=5, hook_name=hook, norm_scale=0.5
    )
    sae = SparseAutoencoder(cfg, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(sae.b_enc.shape, generator=torch.Generator().manual_seed(2)) * 0.5)
        sae.b_dec.normal_(generator=torch.Generator().manual_seed(3))
    return sae.eval()


LAYOUT = TokenLayout(n_cls=1, n_registers=1, grid_hw=(2, 3), width=4)


def test_site_reductions_against_hand_computed_values():
    values_BTN = torch.arange(2 * 8 * 2, dtype=torch.float32).reshape(2, 8, 2)
    patches = values_BTN[:, 2:]
    torch.testing.assert_close(Site("h", "mean").reduce_tokens(values_BTN, LAYOUT), patches.mean(1))
    torch.testing.assert_close(Site("h", "max").reduce_tokens(values_BTN, LAYOUT), patches.amax(1))
    torch.testing.assert_close(Site("h", "cls").reduce_tokens(values_BTN, LAYOUT), values_BTN[:, 0])
    # patch (1, 2) of a 2x3 grid is token 2 + 1*3 + 2 = 7
    torch.testing.assert_close(Site("h", "patch", (1, 2)).reduce_tokens(values_BTN, LAYOUT), values_BTN[:, 7])
    no_grid = TokenLayout(1, 0, None, 4)
    torch.testing.assert_close(Site("h", "mean").reduce_tokens(values_BTN, no_grid), values_BTN.mean(1))
    with pytest.raises(ObjectiveError, match="outside"):
        Site("h", "patch", (2, 0)).reduce_tokens(values_BTN, LAYOUT)
    with pytest.raises(ObjectiveError, match="no CLS"):
        Site("h", "cls").reduce_tokens(values_BTN, TokenLayout(0, 0, (2, 4), 4))
    with pytest.raises(ObjectiveError, match="unknown reduction"):
        Site("h", "median")


def test_sae_feature_values_and_surrogate_are_the_sae_s_own_numbers():
    sae = tiny_sae(d_in=4, hook="h")
    acts = {"h": torch.randn(3, 8, 4, generator=torch.Generator().manual_seed(4))}
    layouts = {"h": LAYOUT}
    objective = SAEFeature(Site("h", "max"), sae, (0, 7, 11))
    flat = acts["h"].reshape(-1, 4)
    codes = sae.encode(flat, raw=True)[:, [0, 7, 11]].reshape(3, 8, 3)
    pre = sae.pre_activations(flat, raw=True)[:, [0, 7, 11]].reshape(3, 8, 3)
    torch.testing.assert_close(objective.values(acts, layouts), codes[:, 2:].amax(1))
    torch.testing.assert_close(objective.values(acts, layouts, surrogate=True), pre[:, 2:].amax(1))
    torch.testing.assert_close(
        objective.select([2, 0]).values(acts, layouts), codes[:, 2:].amax(1)[:, [2, 0]]
    )
    with pytest.raises(ObjectiveError, match=r"out of range: valid indices are 0\.\.11"):
        SAEFeature(Site("h"), sae, (12,))


def test_direction_neuron_class_and_combinations():
    acts = {
        "h": torch.randn(2, 8, 4, generator=torch.Generator().manual_seed(5)),
        "hook_logits": torch.randn(2, 1, 3),
    }
    layouts = {"h": LAYOUT}
    directions = torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0]])
    dot = Direction(Site("h", "mean"), directions).values(acts, layouts)
    torch.testing.assert_close(
        dot, torch.stack([acts["h"][:, 2:, 0].mean(1), 2 * acts["h"][:, 2:, 1].mean(1)], 1)
    )
    cosine = Direction(Site("h", "max"), directions, cosine=True).values(acts, layouts)
    tokens = acts["h"][:, 2:]
    expected = (tokens[..., :2] / tokens.norm(dim=-1, keepdim=True)).amax(1)
    torch.testing.assert_close(cosine, expected)
    neuron = Neuron(Site("h", "cls"), (3, 1))
    torch.testing.assert_close(neuron.values(acts, layouts), acts["h"][:, 0][:, [3, 1]])
    logits = ClassLogit((2,))
    torch.testing.assert_close(logits.values(acts, layouts), acts["hook_logits"][:, 0, [2]])
    contrast = combine((1.0, Neuron(Site("h", "cls"), (3,))), (-0.5, ClassLogit((2,))))
    torch.testing.assert_close(
        contrast.values(acts, layouts), acts["h"][:, 0, [3]] - 0.5 * acts["hook_logits"][:, 0, [2]]
    )
    assert contrast.hooks() == ("h", "hook_logits")
    with pytest.raises(ObjectiveError, match="as many targets"):
        combine((1.0, Neuron(Site("h"), (1, 2))), (1.0, ClassLogit((0,))))
    with pytest.raises(ObjectiveError, match="out of range"):
        ClassLogit((3,)).values(acts, layouts)


def test_diversity_is_minus_the_mean_gram_cosine_within_groups():
    same = torch.randn(1, 5, 3).expand(4, 5, 3)
    torch.testing.assert_close(diversity_B(same, group_size=2), -torch.ones(4))
    torch.testing.assert_close(diversity_B(same, group_size=1), torch.zeros(4))
    # orthogonal channel use gives orthogonal Gram matrices: cosine 0
    a = torch.zeros(2, 5, 3)
    a[0, :, 0], a[1, :, 1] = 1.0, 1.0
    torch.testing.assert_close(diversity_B(a, group_size=2), torch.zeros(2))


def _array_source(n: int = 6, size: int = 16) -> ArraySource:
    rng = np.random.default_rng(0)
    images = (rng.random((n, size, size, 3)) * 255).astype(np.uint8)
    images[..., 0] = images[..., 1] // 2 + 60  # correlated red and green
    return ArraySource(images)


def test_image_statistics_from_images_and_fallback():
    stats = ImageStatistics.from_source(_array_source(), (16, 16))
    assert stats.magnitude_CHF.shape == (3, 16, 9) and stats.size == (16, 16)
    assert stats.magnitude_CHF[:, 0, 0].abs().max() == 0
    torch.testing.assert_close(stats.colour_sqrt_CC, stats.colour_sqrt_CC.T)
    assert torch.linalg.eigvalsh(stats.colour_sqrt_CC).min() >= -1e-6
    assert stats.colour_sqrt_CC[0, 1] > 0.05  # red and green were made to co-vary
    power = ImageStatistics.power_law(16, 16, alpha=1.0)
    assert power.magnitude_CHF[0, 0, 0] == 0 and power.magnitude_CHF[0, 0, 1] > power.magnitude_CHF[0, 0, 4]
    with pytest.raises(ImageStatisticsError, match="holds no images"):
        ImageStatistics.from_source(ArraySource(np.zeros((0, 4, 4, 3), np.uint8)), (16, 16), name="empty")


def test_maco_keeps_the_magnitude_and_every_image_stays_in_range():
    stats = ImageStatistics.from_source(_array_source(), (16, 16))
    gen = torch.Generator().manual_seed(0)
    maco = MacoImage(2, (16, 16), stats, gen)
    spectrum = torch.fft.rfft2(maco.spatial(), norm="ortho").abs()
    # columns 1..W/2-1 carry independent (non self-conjugate) bins: their magnitude is exactly the fixed one
    torch.testing.assert_close(spectrum[..., 1:-1], stats.magnitude_CHF.expand(2, -1, -1, -1)[..., 1:-1])
    for param in (maco, FourierImage(2, (16, 16), stats, gen), PixelImage(2, (16, 16), gen)):
        images = param()
        assert images.shape == (2, 3, 16, 16) and images.min() >= 0 and images.max() <= 1
    with pytest.raises(ImageStatisticsError, match="measured at"):
        MacoImage(1, (8, 8), stats, gen)


def test_augment_is_seeded_and_pads():
    images = torch.rand(2, 3, 16, 16)
    augment = Augment(pad=2, jitter=2, scale=0.1, rotate=10, noise=0.05)
    first = augment(images, torch.Generator().manual_seed(3))
    again = augment(images, torch.Generator().manual_seed(3))
    assert first.shape == (2, 3, 20, 20)
    torch.testing.assert_close(first, again, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["pixel", "fourier", "maco"])
def test_objective_rises_and_the_run_repeats_exactly(method):
    model = tiny_vit(n_layers=2)
    sae = tiny_sae()
    objective = SAEFeature(Site(HOOK, "mean"), sae, (3, 9))
    stats = ImageStatistics.power_law(32, 32)

    def run():
        gen = torch.Generator().manual_seed(0)
        param = {
            "pixel": lambda: PixelImage(4, (32, 32), gen),
            "fourier": lambda: FourierImage(4, (32, 32), stats, gen),
            "maco": lambda: MacoImage(4, (32, 32), stats, gen),
        }[method]()
        return optimize(
            model, objective, [0, 0, 1, 1], param, steps=30, lr=0.05, augment=Augment(), generator=gen
        )

    result = run()
    curve = result.curve_SB
    assert (curve[-5:].mean(0) > curve[:5].mean(0)).all(), curve[[0, -1]]
    assert result.images_B3HW.min() >= 0 and result.images_B3HW.max() <= 1
    assert (result.attribution_BHW is not None) == (method == "maco")
    torch.testing.assert_close(run().images_B3HW, result.images_B3HW, rtol=0, atol=0)
    assert evaluate(model, objective, result.images_B3HW).shape == (4, 2)


@pytest.fixture
def vit_sae_dir(tmp_path):
    """A random TopK SAE at the shipped shapes ViT's middle block (width 96)."""
    sae = tiny_sae(d_in=96, hook="blocks.2.hook_resid_post")
    return save_sae(sae, tmp_path / "sae")


def test_visualize_command_writes_images_curves_and_ratios(tmp_path, vit_sae_dir):
    out = tmp_path / "viz"
    args = ["visualize", "--model", "vitsae:shapes-vit", "--sae", str(vit_sae_dir), "--features", "top:2",
            "--reference-source", "shapes:8:3", "--steps", "4", "--samples", "2", "--diversity", "0.1",
            "--method", "maco", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    record = json.loads((out / "featureviz.json").read_text())
    assert record["format"] == "vitsae.featureviz" and record["format_version"] == 1
    assert len(record["targets"]) == 2
    for target in record["targets"]:
        assert len(target["images"]) == 2 and len(target["attributions"]) == 2
        assert all((out / "images" / name).is_file() for name in target["images"] + target["attributions"])
        assert len(target["curves"][0]) == len(target["curve_steps"]) == 4
        assert target["reference"]["max"] >= 0 and len(target["ratio"]) == 2
    assert (out / "grid.png").is_file() and (out / "featureviz.safetensors").is_file()


def test_class_targets_by_name(tmp_path):
    out = tmp_path / "classes"
    args = ["visualize", "--model", "vitsae:shapes-vit", "--target", "class", "--features", "round-warm,3",
            "--reference-source", "shapes:4", "--steps", "2", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    record = json.loads((out / "featureviz.json").read_text())
    assert [t["name"] for t in record["targets"]] == ["round-warm", "square-cool"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--features", "9999"], "out of range"),
        (["--features", "top:2"], "give --reference-source"),
        (["--hook", "blocks.9.hook_resid_post"], "differs from the SAE's hook"),
        (["--features", "0", "--method", "maco", "--spectrum-source", "shapes:0"], "holds no images"),
        (["--features", "bogus"], "neither an index nor a known name"),
    ],
)
def test_bad_requests_are_one_line_errors(tmp_path, vit_sae_dir, capsys, extra, message):
    args = ["visualize", "--model", "vitsae:shapes-vit", "--sae", str(vit_sae_dir), "--steps", "1",
            "--out", str(tmp_path / "o"), "--no-progress", *extra]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_sae_for_another_hook_is_refused(tmp_path, capsys):
    sae_dir = save_sae(tiny_sae(d_in=96, hook="blocks.7.hook_resid_post"), tmp_path / "sae")
    args = ["visualize", "--model", "vitsae:shapes-vit", "--sae", str(sae_dir), "--features", "0",
            "--steps", "1", "--out", str(tmp_path / "o"), "--no-progress"]  # fmt: skip
    assert main(args) == 2
    assert "has no hook 'blocks.7.hook_resid_post'" in capsys.readouterr().err


def test_vital_matches_the_patch_distribution_of_real_images(tmp_path, vit_sae_dir):
    out = tmp_path / "vital"
    args = ["visualize", "--model", "vitsae:shapes-vit", "--sae", str(vit_sae_dir), "--features", "0,5",
            "--method", "vital", "--reference-source", "shapes:6", "--steps", "30", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    record = json.loads((out / "featureviz.json").read_text())
    for target in record["targets"]:
        curve = target["curves"][0]  # minus the squared distance to the reference distribution
        assert all(v <= 0 for v in curve) and sum(curve[-5:]) > sum(curve[:5])
