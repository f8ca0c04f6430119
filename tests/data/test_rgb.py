"""Every awkward image file, written with PIL: converted to RGB correctly, or refused with a reason."""

import numpy as np
import pytest
from PIL import Image

from vitsae.data import ALPHA_BACKGROUND, BadImageError, open_rgb


def _save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def _pixels(path) -> np.ndarray:
    image = open_rgb(path)
    assert image.mode == "RGB"
    return np.asarray(image).astype(np.int16)


def test_rgb_png_is_unchanged(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_pixels(_save(Image.fromarray(data), tmp_path / "x.png")), data)


def test_greyscale_and_bilevel_become_equal_channels(tmp_path):
    grey = np.arange(24, dtype=np.uint8).reshape(4, 6) * 10
    out = _pixels(_save(Image.fromarray(grey, mode="L"), tmp_path / "l.png"))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))
    bits = Image.fromarray(grey > 100).convert("1")
    out = _pixels(_save(bits, tmp_path / "b.png"))
    np.testing.assert_array_equal(out[..., 0], np.where(grey > 100, 255, 0))


def test_rgba_is_composited_onto_white(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (200, 10, 50, 255)  # opaque
    rgba[0, 1] = (200, 10, 50, 0)  # fully transparent
    rgba[1, 0] = (0, 0, 0, 128)  # half transparent black
    out = _pixels(_save(Image.fromarray(rgba, mode="RGBA"), tmp_path / "a.png"))
    assert tuple(out[0, 0]) == (200, 10, 50)
    assert tuple(out[0, 1]) == ALPHA_BACKGROUND == (255, 255, 255)
    assert np.abs(out[1, 0] - 127).max() <= 1


def test_la_is_composited_onto_white(tmp_path):
    la = np.array([[[40, 255], [40, 0]]], dtype=np.uint8)
    out = _pixels(_save(Image.fromarray(la, mode="LA"), tmp_path / "la.png"))
    assert tuple(out[0, 0]) == (40, 40, 40) and tuple(out[0, 1]) == (255, 255, 255)


def test_palette_with_and_without_transparency(tmp_path):
    palette_image = Image.new("P", (3, 1))
    palette_image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    palette_image.putdata([0, 1, 2])
    out = _pixels(_save(palette_image, tmp_path / "p.png"))
    np.testing.assert_array_equal(out[0], [[255, 0, 0], [0, 255, 0], [0, 0, 255]])
    out = _pixels(_save(palette_image, tmp_path / "pt.png", transparency=1))
    np.testing.assert_array_equal(out[0], [[255, 0, 0], [255, 255, 255], [0, 0, 255]])
    out = _pixels(_save(palette_image, tmp_path / "pt.gif", transparency=2))
    np.testing.assert_array_equal(out[0], [[255, 0, 0], [0, 255, 0], [255, 255, 255]])


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_cmyk_files_convert_to_the_right_colours(tmp_path, fmt):
    cmyk = Image.new("CMYK", (16, 16), (255, 0, 0, 0))  # pure cyan
    cmyk.paste((0, 255, 255, 0), (8, 0, 16, 16))  # pure red on the right half
    out = _pixels(_save(cmyk, tmp_path / f"c.{fmt.lower()}", format=fmt))
    tolerance = 0 if fmt == "TIFF" else 8
    assert np.abs(out[4, 2] - [0, 255, 255]).max() <= tolerance
    assert np.abs(out[4, 13] - [255, 0, 0]).max() <= tolerance


def test_sixteen_bit_png_is_scaled_to_eight_bits(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    out = _pixels(_save(image, tmp_path / "16.png"))
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_32_bit_integer_tiff_is_read_as_16_bit_data(tmp_path):
    values = np.array([[0, 65535, 70000, -5]], dtype=np.int32)
    image = Image.fromarray(values)
    assert image.mode == "I"
    out = _pixels(_save(image, tmp_path / "i.tiff"))
    np.testing.assert_array_equal(out[0, :, 1], [0, 255, 255, 0])


def test_exif_orientation_is_applied(tmp_path):
    data = np.zeros((16, 32, 3), dtype=np.uint8)  # 16 rows, 32 columns
    data[:8, :8] = (255, 0, 0)  # red block in the top-left corner as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # the stored image must be rotated 90 degrees clockwise for display
    path = _save(Image.fromarray(data), tmp_path / "o.jpg", exif=exif, quality=100)
    out = _pixels(path)
    assert out.shape == (32, 16, 3)
    assert out[2, 13, 0] > 200 and out[2, 13, 1] < 60  # stored top-left is shown top-right
    assert out[2, 2, 0] < 60


BAD_CASES = ["random-bytes", "empty", "text", "truncated-png", "truncated-jpeg", "float"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_unreadable_files_raise_bad_image_with_a_reason(tmp_path, case):
    path = tmp_path / f"{case}.png"
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    if case == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(500))
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("not an image")
    elif case == "truncated-png":
        picture.save(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif case == "truncated-jpeg":
        path = tmp_path / "t.jpg"
        picture.save(path, quality=95)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path = _save(Image.fromarray(np.full((4, 4), 0.5, np.float32)), tmp_path / "f.tiff")
    with pytest.raises(BadImageError) as info:
        open_rgb(path)
    reason = str(info.value)
    assert ("mode F" in reason) if case == "float" else (str(path) in reason and ":" in reason)
