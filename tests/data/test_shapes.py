"""The shapes dataset: determinism, masks that match the drawn pixels, the label rule, export."""

import csv
import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vitsae.data import (
    CLASS_NAMES,
    CONCEPT_FAMILIES,
    CONCEPTS,
    FolderSource,
    ShapesConfig,
    ShapesDataset,
    export_shapes,
    object_mask,
    read_exported_masks,
    source_from_description,
)
from vitsae.data.shapes import RECENT_SAMPLES

# The label rule written out by hand, independently of vitsae.data.shapes.
GROUP_OF_SHAPE = {"circle": 0, "ring": 0, "square": 1, "triangle": 2, "cross": 3, "star": 3}
IS_COOL = {"red": 0, "orange": 0, "yellow": 0, "green": 1, "cyan": 1, "blue": 1}


def test_same_seed_gives_identical_samples_and_other_seed_differs():
    first, second = ShapesDataset(seed=3, n_images=20), ShapesDataset(seed=3, n_images=20)
    other = ShapesDataset(seed=4, n_images=20)
    for i in range(20):
        a, b = first.sample(i), second.sample(i)
        np.testing.assert_array_equal(a.image_HWC, b.image_HWC)
        assert a.label == b.label and a.objects == b.objects and a.masks.keys() == b.masks.keys()
        for name in a.masks:
            np.testing.assert_array_equal(a.masks[name], b.masks[name])
    assert any((first.sample(i).image_HWC != other.sample(i).image_HWC).any() for i in range(20))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), index=st.integers(0, 10**6))
def test_an_image_depends_only_on_seed_and_index(seed, index):
    """Generating one image alone (any dataset length, after other images or not) equals the full run."""
    alone = ShapesDataset(seed=seed, n_images=index + 1).sample(index)
    big = ShapesDataset(seed=seed, n_images=index + 50)
    big.sample(index + 1)
    np.testing.assert_array_equal(alone.image_HWC, big.sample(index).image_HWC)


def test_slices_generated_independently_equal_the_full_run():
    dataset = ShapesDataset(seed=11, n_images=24)
    full = np.stack([dataset.sample(i).image_HWC for i in range(24)])
    shards = [
        np.stack([ShapesDataset(seed=11, n_images=24).sample(i).image_HWC for i in range(s, s + 8)])
        for s in (16, 0, 8)
    ]
    np.testing.assert_array_equal(np.concatenate([shards[1], shards[2], shards[0]]), full)


@pytest.mark.parametrize("seed", [0, 1])
def test_labels_follow_the_hand_written_rule_and_classes_are_balanced(seed):
    dataset = ShapesDataset(seed=seed, n_images=400)
    labels = []
    for i in range(400):
        sample = dataset.sample(i)
        (main,) = [obj for obj in sample.objects if obj.size == "large"]
        assert sample.label == 2 * GROUP_OF_SHAPE[main.shape] + IS_COOL[main.colour]
        assert 1 <= len(sample.objects) <= 3
        labels.append(sample.label)
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    assert len(CLASS_NAMES) == 8 and counts.min() >= 30


def test_masks_cover_exactly_the_visible_pixels_of_each_concept():
    """Concept masks equal the union of each object's own shape minus what later objects cover."""
    dataset = ShapesDataset(seed=5, n_images=60)
    for i in range(60):
        sample = dataset.sample(i)
        size = dataset.config.image_size
        expected: dict[str, np.ndarray] = {}
        covered = np.zeros((size, size), dtype=bool)
        for k in reversed(range(len(sample.objects))):
            obj = sample.objects[k]
            visible = object_mask(obj, size) & ~covered
            covered |= object_mask(obj, size)
            assert visible.sum() == sample.visible_pixels[k]
            for concept in obj.concepts(size):
                expected[concept] = expected.get(concept, np.zeros_like(visible)) | visible
        expected = {name: mask for name, mask in expected.items() if mask.any()}
        expected[f"background:{sample.background}"] = ~covered
        assert set(sample.masks) == set(expected)
        for name, mask in sample.masks.items():
            assert mask.dtype == bool and mask.shape == (size, size)
            np.testing.assert_array_equal(mask, expected[name], err_msg=f"image {i} {name}")
        for family, values in CONCEPT_FAMILIES.items():
            empty = np.zeros((size, size), bool)
            stacked = np.stack([sample.masks.get(f"{family}:{v}", empty) for v in values])
            assert stacked.sum(0).max() <= 1, f"{family} masks overlap in image {i}"
            if family != "background":
                np.testing.assert_array_equal(stacked.any(0), covered)


def test_masks_match_the_drawn_colours_without_noise():
    """With no noise or jitter, every non-background pixel lies in exactly the mask of its drawn colour."""
    from vitsae.data.shapes import COLOURS

    dataset = ShapesDataset(seed=2, n_images=40, backgrounds=("plain",), pixel_noise=0.0, colour_jitter=0.0)
    for i in range(40):
        sample = dataset.sample(i)
        image = sample.image_HWC.astype(np.int16)
        background = sample.masks["background:plain"]
        corner = image[background][0]
        np.testing.assert_array_equal(image[background], np.broadcast_to(corner, image[background].shape))
        assert (image[~background] != corner).any(axis=-1).all()
        for name, rgb in COLOURS.items():
            full = np.round(np.asarray(rgb) * 255 + 1e-9).astype(np.int16)
            half = np.round(np.asarray(rgb) * 0.5 * 255).astype(np.int16)
            drawn = (np.abs(image - full).max(-1) <= 1) | (np.abs(image - half).max(-1) <= 1)
            mask = sample.masks.get(f"colour:{name}", np.zeros(background.shape, bool))
            np.testing.assert_array_equal(drawn & ~background, mask, err_msg=f"image {i} colour {name}")


def test_every_concept_and_class_occurs():
    dataset = ShapesDataset(seed=0, n_images=300)
    seen, labels = set(), set()
    for i in range(300):
        sample = dataset.sample(i)
        seen |= set(sample.masks)
        labels.add(sample.label)
    assert seen == set(CONCEPTS) and labels == set(range(len(CLASS_NAMES)))


def test_image_source_interface_and_description_recreates_it():
    dataset = ShapesDataset(seed=7, n_images=5, image_size=32)
    record = dataset[3]
    assert record.image.mode == "RGB" and record.image.size == (32, 32)
    assert record.label == dataset.sample(3).label and record.key == "shapes-seed7-0000003"
    description = json.loads(json.dumps(dataset.describe()))
    again = source_from_description(description)
    np.testing.assert_array_equal(np.asarray(again[3].image), np.asarray(record.image))
    assert len(again) == 5
    with pytest.raises(IndexError, match="out of range"):
        dataset.sample(5)


def test_bad_configs_are_refused_with_the_valid_choices():
    with pytest.raises(ValueError, match="choose from"):
        ShapesConfig(backgrounds=("stars",))
    with pytest.raises(ValueError, match="unknown ShapesConfig fields"):
        ShapesDataset(colours=3)


def test_export_round_trip(tmp_path):
    dataset = ShapesDataset(seed=9, n_images=12, image_size=32)
    out = export_shapes(dataset, tmp_path / "export", start=2, stop=10)
    with open(out / "labels.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["index"]) for r in rows] == list(range(2, 10))
    objects = json.loads((out / "objects.json").read_text())
    for row, record in zip(rows, objects, strict=True):
        sample = dataset.sample(int(row["index"]))
        image = np.asarray(Image.open(out / row["image"]))
        np.testing.assert_array_equal(image, sample.image_HWC)
        assert int(row["label"]) == sample.label and row["class_name"] == CLASS_NAMES[sample.label]
        masks = read_exported_masks(out, row["key"])
        assert set(masks) == set(sample.masks)
        for name in masks:
            np.testing.assert_array_equal(masks[name], sample.masks[name])
        assert [o["shape"] for o in record["objects"]] == [o.shape for o in sample.objects]
    folder = FolderSource(out / "images", classes=[f"{i:02d}-{n}" for i, n in enumerate(CLASS_NAMES)])
    by_key = {folder.key(i).rsplit("/", 1)[1][:-4]: folder[i].label for i in range(len(folder))}
    assert by_key == {r["key"]: int(r["label"]) for r in rows}
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["format_version"] == 1 and meta["start"] == 2 and meta["source"] == dataset.describe()


def test_recent_samples_are_drawn_once_read_only_and_left_out_of_pickles():
    dataset = ShapesDataset(seed=4, n_images=RECENT_SAMPLES + 2)
    draws = []
    original = dataset._draw

    def counting_draw(index):
        draws.append(index)
        return original(index)

    dataset._draw = counting_draw
    image = dataset.sample(1)
    masks = dataset.masks(1)
    assert draws == [1] and dataset.sample(1) is image and masks is image.masks
    assert not image.image_HWC.flags.writeable and not any(m.flags.writeable for m in masks.values())
    for i in range(2, RECENT_SAMPLES + 2):
        dataset.sample(i)
    dataset.sample(1)  # pushed out by RECENT_SAMPLES newer ones: drawn again, the same pixels
    assert draws.count(1) == 2
    np.testing.assert_array_equal(dataset.sample(1).image_HWC, image.image_HWC)
    del dataset._draw
    assert len(pickle.loads(pickle.dumps(dataset))._recent) == 0
