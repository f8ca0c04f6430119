"""Folder, Hugging Face and array sources: order, labels, descriptions, errors."""

import json

import numpy as np
import pytest
from PIL import Image

from vitsae.data import (
    ArraySource,
    FolderSource,
    HFSource,
    ImageSource,
    open_source,
    source_from_description,
)


def test_folder_source_is_recursive_sorted_and_labels_from_subfolders(class_folder):
    source = FolderSource(class_folder)
    assert isinstance(source, ImageSource)
    keys = [source[i].key for i in range(len(source))]
    assert keys == ["cat/a.png", "cat/b.png", "dog/d.bmp", "dog/puppies/c.png", "top.png"]
    assert [source[i].label for i in range(len(source))] == [0, 0, 1, 1, None]
    assert source.classes == ["cat", "dog"]
    assert np.asarray(source[0].image)[0, 0].tolist() == [20, 235, 10]
    assert source.key(3) == "dog/puppies/c.png"


def test_folder_source_given_classes_and_errors(class_folder, tmp_path):
    source = FolderSource(class_folder, classes=["dog", "cat", "bird"])
    assert source[0].label == 1 and source[2].label == 0
    with pytest.raises(ValueError, match=r"sub-folders \['dog'\] are not among"):
        FolderSource(class_folder, classes=["cat"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FolderSource(tmp_path / "missing")
    with pytest.raises(IndexError, match="out of range for a source of 5 images"):
        source[5]


def test_folder_description_recreates_the_source(class_folder):
    source = FolderSource(class_folder)
    again = source_from_description(json.loads(json.dumps(source.describe())))
    assert [again[i].key for i in range(len(again))] == [source[i].key for i in range(len(source))]
    assert again.classes == source.classes


def _hf_dataset(solid, n: int = 6):
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    return datasets.Dataset.from_dict(
        {"image": [solid(10 * i) for i in range(n)], "label": [i % 2 for i in range(n)]}, features=features
    )


def test_hf_source_from_disk_round_trip(tmp_path, solid_image):
    _hf_dataset(solid_image).save_to_disk(str(tmp_path / "ds"))
    source = HFSource.from_disk(tmp_path / "ds")
    assert len(source) == 6
    record = source[3]
    assert record.image.mode == "RGB" and record.label == 1 and record.key == "data/3"
    assert np.asarray(record.image)[0, 0].tolist() == [30, 225, 15]
    again = source_from_description(json.loads(json.dumps(source.describe())))
    assert np.array_equal(np.asarray(again[3].image), np.asarray(record.image))


def test_hf_source_dataset_dict_needs_a_split(tmp_path, solid_image):
    import datasets

    splits = {"train": _hf_dataset(solid_image, 4), "test": _hf_dataset(solid_image, 2)}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ValueError, match="holds splits"):
        HFSource.from_disk(tmp_path / "dd")
    assert len(HFSource.from_disk(tmp_path / "dd", split="test")) == 2


def test_hf_source_from_local_imagefolder(tmp_path, solid_image):
    for name, value in [("cat/a.png", 10), ("cat/b.png", 20), ("dog/c.png", 30)]:
        (tmp_path / "imgs" / name).parent.mkdir(parents=True, exist_ok=True)
        solid_image(value).convert("L").save(tmp_path / "imgs" / name)
    source = HFSource.from_imagefolder(tmp_path / "imgs", cache_dir=str(tmp_path / "cache"))
    assert len(source) == 3
    by_value = {int(np.asarray(source[i].image)[0, 0, 0]): source[i].label for i in range(3)}
    grey = {v: int(np.asarray(solid_image(v).convert("L"))[0, 0]) for v in (10, 20, 30)}
    assert by_value == {grey[10]: 0, grey[20]: 0, grey[30]: 1}
    assert all(source[i].image.mode == "RGB" for i in range(3))
    assert source.describe()["loader"] == "imagefolder"


def test_hf_source_converts_odd_modes_and_checks_columns():
    import datasets

    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    dataset = datasets.Dataset.from_dict(
        {"img": [rgba, Image.new("L", (4, 4), 7)]}, features=datasets.Features({"img": datasets.Image()})
    )
    source = HFSource(dataset, image_column="img")
    assert np.asarray(source[0].image)[0, 0].tolist() == [255, 255, 255]
    assert np.asarray(source[1].image)[0, 0].tolist() == [7, 7, 7] and source[1].label is None
    with pytest.raises(ValueError, match=r"image column 'image' not in dataset columns \['img'\]"):
        HFSource(dataset)
    with pytest.raises(ValueError, match="cannot re-create a source of kind 'hf'"):
        source_from_description(source.describe())


def test_array_source_uint8_and_float():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 5, 6, 3), dtype=np.uint8)
    source = ArraySource(images, labels_N=[2, 0, 1])
    assert len(source) == 3 and source[1].label == 0 and source[1].key == "array/1"
    np.testing.assert_array_equal(np.asarray(source[2].image), images[2])
    floats = ArraySource(images.astype(np.float64) / 255.0)
    np.testing.assert_array_equal(np.asarray(floats[2].image), images[2])
    assert floats[0].label is None
    json.dumps(source.describe())
    with pytest.raises(ValueError, match="cannot re-create a source of kind 'array'"):
        source_from_description(source.describe())


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((2, 4, 4), np.uint8), None, r"shape \(N, H, W, 3\), got \(2, 4, 4\)"),
        (np.zeros((2, 4, 4, 3), np.int32), None, "uint8 or float images, got dtype int32"),
        (np.zeros((2, 4, 4, 3), np.uint8), [1], "1 labels for 2 images"),
    ],
)
def test_array_source_refuses_bad_input(images, labels, message):
    with pytest.raises(ValueError, match=message):
        ArraySource(images, labels)


def test_open_source_spec_strings(class_folder, tmp_path, solid_image):
    shapes = open_source("shapes:10:3")
    assert len(shapes) == 10 and shapes.describe()["config"]["seed"] == 3
    assert open_source("shapes:5").describe()["config"]["image_size"] == 64
    assert open_source("shapes:5:1:32")[0].image.size == (32, 32)
    assert isinstance(open_source(str(class_folder)), FolderSource)
    assert len(open_source(f"folder:{class_folder}")) == 5
    _hf_dataset(solid_image, 3).save_to_disk(str(tmp_path / "ds"))
    assert isinstance(open_source(str(tmp_path / "ds")), HFSource)
    assert len(open_source(f"hf:{tmp_path / 'ds'}")) == 3
    with pytest.raises(ValueError, match=r"bad shapes spec 'shapes:x'"):
        open_source("shapes:x")
    with pytest.raises(ValueError, match="unknown image source 'nowhere'.*folder:<dir>"):
        open_source("nowhere")
