"""Image selection for edit/eval: class filter, re-batching, the image limit, and replayed passes."""

from __future__ import annotations

import pytest
import torch

from vitsae.data.preprocess import Preprocess
from vitsae.data.shapes import ShapesDataset
from vitsae.edit.inputs import InputError, image_batches, resolve_class


@pytest.mark.parametrize(("only", "n_images"), [(None, 7), (None, 100), (2, 5), (2, 100)])
def test_selection_is_rebatched_limited_and_replayed(only, n_images):
    source = ShapesDataset(n_images=40, image_size=32)
    labels = torch.tensor([source[i].label for i in range(40)])
    wanted = [i for i in range(40) if only is None or labels[i] == only][:n_images]
    batches = image_batches(source, Preprocess(size=(32, 32)), n_images, batch_size=4, only_label=only)
    first = list(batches())
    assert torch.cat([b.indices_B for b in first]).tolist() == wanted
    assert all(len(b.indices_B) == 4 for b in first[:-1]) and 0 < len(first[-1].indices_B) <= 4
    assert all(b.pixels_BCHW.shape[0] == len(b.indices_B) for b in first)
    second = list(batches())
    assert [b.indices_B.tolist() for b in second] == [b.indices_B.tolist() for b in first]


def test_classes_by_name_or_index():
    names = ["round-warm", "round-cool"]
    assert resolve_class("round-cool", names) == 1 and resolve_class("0", names) == 0
    with pytest.raises(
        InputError, match="unknown class '7'; the model's classes are: round-warm, round-cool"
    ):
        resolve_class("7", names)
