"""Opening image sources by name: a CLI spec string (`open_source`) or a recorded `describe()` output
(`source_from_description`).

This registry sits above both `sources.py` (folders, Hugging Face datasets, arrays) and `shapes.py` (the
procedural dataset), so neither imports the other back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitsae.config import config_from_dict
from vitsae.data.shapes import ShapesConfig, ShapesDataset
from vitsae.data.sources import FolderSource, HFSource, ImageSource
from vitsae.errors import InvalidValue, MissingFile


def source_from_description(description: dict[str, Any]) -> ImageSource:
    """Re-create a source from its `describe()` output (folder, hf from disk, shapes)."""
    kind = description.get("kind")
    if kind == "folder":
        return FolderSource(
            description["root"], classes=description["classes"], extensions=tuple(description["extensions"])
        )
    hf_loaders = {"load_from_disk": HFSource.from_disk, "imagefolder": HFSource.from_imagefolder}
    if kind == "hf" and description.get("loader") in hf_loaders:
        return hf_loaders[description["loader"]](
            description["path"],
            split=description["split"],
            image_column=description["image_column"],
            label_column=description["label_column"],
        )
    if kind == "shapes":
        return ShapesDataset(config_from_dict(ShapesConfig, description["config"]))
    raise InvalidValue(
        f"cannot re-create a source of kind {kind!r} (loader {description.get('loader')!r}) from its "
        "description; re-creatable kinds: folder, hf (load_from_disk / imagefolder), shapes. "
        "In-memory arrays and datasets must be passed in again."
    )


SOURCE_SPECS = (
    "shapes:<n>[:<seed>[:<size>]]",
    "folder:<dir>",
    "hf:<save_to_disk dir>[@<split>]",
    "imagefolder:<dir>[@<split>]",
    "<dir> (a save_to_disk dir, else an image folder)",
)


def open_source(spec: str) -> ImageSource:
    """The image source named by a spec string (see `SOURCE_SPECS`), as the CLI takes it."""
    scheme, sep, rest = spec.partition(":")
    if sep and scheme == "shapes":
        parts = rest.split(":")
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            numbers = []
        if not 1 <= len(numbers) <= 3:
            raise InvalidValue(f"bad shapes spec {spec!r}; expected shapes:<n>[:<seed>[:<size>]]")
        n_images, seed, size = numbers + [0, 0, 64][len(numbers) :]  # seed 0 and 64x64 unless given
        return ShapesDataset(n_images=n_images, seed=seed, image_size=size)
    if sep and scheme in ("folder", "hf", "imagefolder"):
        path, _, split = rest.partition("@")
        if not Path(path).is_dir():
            raise MissingFile(f"image source {spec!r}: no such directory {path}")
        if scheme == "folder":
            return FolderSource(path)
        if scheme == "hf":
            return HFSource.from_disk(path, split=split or None)
        return HFSource.from_imagefolder(path, split=split or "train")
    path = Path(spec)
    if path.is_dir():
        saved = any((path / name).is_file() for name in ("state.json", "dataset_dict.json"))
        return HFSource.from_disk(path) if saved else FolderSource(path)
    raise InvalidValue(
        f"unknown image source {spec!r}: not a directory; use one of: {', '.join(SOURCE_SPECS)}"
    )
