"""The shipped shapes models load through `vitsae.models.load` and reach their carded accuracy."""

import json
import math

import pytest
import torch

from vitsae.data import ImageLoader, ShapesDataset
from vitsae.models.load import checkpoints_dir, load

FRESH_SEED = 4242  # neither the training seed nor the held-out seed on the cards
FRESH_IMAGES = 500


@pytest.mark.parametrize("name", ["shapes-vit", "shapes-cnn"])
def test_shipped_model_reaches_its_carded_accuracy_on_fresh_images(name):
    directory = checkpoints_dir() / name
    card = json.loads((directory / "card.json").read_text())
    assert card["train_seed"] != FRESH_SEED and card["held_out_seed"] != FRESH_SEED
    weights = [p for p in directory.iterdir() if p.suffix == ".safetensors"]
    assert weights and sum(p.stat().st_size for p in directory.iterdir()) < 10 * 2**20
    model = load(f"vitsae:{name}")
    assert model.preprocess.size == (64, 64)
    torch.set_num_threads(2)
    dataset = ShapesDataset(seed=FRESH_SEED, n_images=FRESH_IMAGES)
    correct = 0
    with torch.no_grad():
        for batch in ImageLoader(dataset, model.preprocess, batch_size=250):
            correct += int((model(batch.pixels_BCHW).argmax(-1) == batch.labels_B).sum())
    accuracy, carded = correct / FRESH_IMAGES, card["held_out_accuracy"]
    # Both numbers are sample estimates: allow 3 standard errors of their difference, at least 2 points.
    spread = 3 * math.sqrt(carded * (1 - carded) * (1 / FRESH_IMAGES + 1 / card["held_out_images"]))
    assert abs(accuracy - carded) <= max(0.02, spread), f"{name}: {accuracy:.3f} on fresh images, card {card}"
    assert sum(p.numel() for p in model.parameters()) == card["n_parameters"]
