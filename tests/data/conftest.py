"""Small image folders written with PIL for the source and loader tests."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def solid(value: int, size: tuple[int, int] = (12, 10)) -> Image.Image:
    """An RGB image whose every pixel is (value, 255 - value, value // 2)."""
    return Image.new("RGB", size, (value, 255 - value, value // 2))


@pytest.fixture
def solid_image():
    """The `solid` image maker, for tests that build their own data."""
    return solid


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    """root/{cat,dog}/... (dog nested one level deeper) plus one image at the root; all readable."""
    root = tmp_path / "folder"
    (root / "cat").mkdir(parents=True)
    (root / "dog" / "puppies").mkdir(parents=True)
    solid(10).save(root / "cat" / "b.png")
    solid(20).save(root / "cat" / "a.png")
    solid(30).save(root / "dog" / "puppies" / "c.png")
    solid(40).save(root / "dog" / "d.bmp")
    solid(50).save(root / "top.png")
    (root / "notes.txt").write_text("not an image and not listed")
    return root


@pytest.fixture
def folder_with_bad_files(tmp_path: Path) -> Path:
    """Six files in sorted order: good, corrupt, good, truncated, float (refused), good."""
    root = tmp_path / "mixed"
    root.mkdir()
    solid(1).save(root / "0.png")
    (root / "1.png").write_bytes(b"\x89PNG garbage")
    solid(2).save(root / "2.png")
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    noisy.save(root / "3.png")
    (root / "3.png").write_bytes((root / "3.png").read_bytes()[:300])
    Image.fromarray(np.zeros((4, 4), np.float32)).save(root / "4.tiff")
    solid(3).save(root / "5.png")
    return root
