"""The batched loader: order, slices, preprocessing, worker processes, and skipped-image reports."""

import logging

import numpy as np
import pytest
import torch

from vitsae.data import NO_LABEL, ArraySource, FolderSource, ImageLoader, Preprocess, ShapesDataset

PREPROCESS = Preprocess(size=(8, 8), resample="bilinear")


def test_batches_follow_source_order_with_preprocessed_pixels_and_labels():
    images = np.random.default_rng(0).integers(0, 256, size=(7, 8, 8, 3), dtype=np.uint8)
    source = ArraySource(images, labels_N=[3, 1, 4, 1, 5, 9, 2])
    loader = ImageLoader(source, PREPROCESS, batch_size=3)
    batches = list(loader)
    assert len(loader) == 3 and [len(b.indices_B) for b in batches] == [3, 3, 1]
    indices = torch.cat([b.indices_B for b in batches])
    assert indices.tolist() == list(range(7)) and indices.dtype == torch.int64
    assert torch.cat([b.labels_B for b in batches]).tolist() == [3, 1, 4, 1, 5, 9, 2]
    pixels = torch.cat([b.pixels_BCHW for b in batches])
    assert pixels.shape == (7, 3, 8, 8) and pixels.dtype == torch.float32
    expected = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(pixels, expected)
    assert loader.skipped == []


def test_unlabelled_images_get_no_label():
    loader = ImageLoader(ArraySource(np.zeros((2, 8, 8, 3), np.uint8)), PREPROCESS, batch_size=4)
    assert next(iter(loader)).labels_B.tolist() == [NO_LABEL, NO_LABEL]


def test_start_stop_slice_and_its_validation():
    source = ShapesDataset(seed=1, n_images=10, image_size=16)
    loader = ImageLoader(source, Preprocess(size=(16, 16)), batch_size=4, start=3, stop=9)
    batches = list(loader)
    assert torch.cat([b.indices_B for b in batches]).tolist() == list(range(3, 9))
    assert torch.cat([b.labels_B for b in batches]).tolist() == [source.sample(i).label for i in range(3, 9)]
    with pytest.raises(ValueError, match=r"slice \[4, 11\) is not within the source's 10 images"):
        ImageLoader(source, PREPROCESS, start=4, stop=11)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        ImageLoader(source, PREPROCESS, batch_size=0)


def test_bad_images_are_skipped_reported_and_logged(folder_with_bad_files, caplog):
    source = FolderSource(folder_with_bad_files)
    loader = ImageLoader(source, PREPROCESS, batch_size=2)
    with caplog.at_level(logging.WARNING, logger="vitsae.data.loader"):
        batches = list(loader)
    assert torch.cat([b.indices_B for b in batches]).tolist() == [0, 2, 5]
    assert [(s.index, s.key) for s in loader.skipped] == [(1, "1.png"), (3, "3.png"), (4, "4.tiff")]
    assert "cannot decode" in loader.skipped[0].reason and "truncated" in loader.skipped[1].reason.lower()
    assert "mode F" in loader.skipped[2].reason
    assert [r.message for r in caplog.records if "skipped image" in r.message] == [
        f"skipped image {s.index} ({s.key}): {s.reason}" for s in loader.skipped
    ]
    list(loader)
    assert len(loader.skipped) == 3, "a second pass starts a fresh report"


def test_a_batch_of_only_bad_images_is_not_yielded(folder_with_bad_files):
    loader = ImageLoader(FolderSource(folder_with_bad_files), PREPROCESS, batch_size=1, start=1, stop=2)
    assert list(loader) == [] and [s.index for s in loader.skipped] == [1]


def test_worker_processes_give_the_same_batches_and_reports(folder_with_bad_files):
    source = FolderSource(folder_with_bad_files)
    serial = list(ImageLoader(source, PREPROCESS, batch_size=2))
    parallel_loader = ImageLoader(source, PREPROCESS, batch_size=2, num_workers=2)
    parallel = list(parallel_loader)
    assert [b.indices_B.tolist() for b in parallel] == [b.indices_B.tolist() for b in serial]
    for a, b in zip(serial, parallel, strict=True):
        torch.testing.assert_close(a.pixels_BCHW, b.pixels_BCHW, rtol=0, atol=0)
    assert [s.index for s in parallel_loader.skipped] == [1, 3, 4]
