"""Concept masks: image sources that also say, per pixel, where each named concept is.

A `ConceptSource` is an `ImageSource` with `concepts` (every concept name, in a fixed order) and
`masks(i) -> {concept: bool (H, W)}` at the resolution of image i; a concept absent from the dict is
all-false in that image. Dissection scores features against these masks.

Two kinds exist: `ShapesDataset` (exact masks from its generator) and `MaskFolderSource`, a folder of
the user's own images with masks in one of two layouts (docs/dissection.md, "Your own masks"):

    <root>/images/<name>.<ext>                images (any sub-folders; the first one is the class)
    <root>/masks/<name>/<concept>.png         one mask per concept present (non-zero pixels = inside)
 or <root>/labels/<name>.png + concepts.csv   a label map whose pixel values the table `value,concept`
                                              names (an empty concept: a value to ignore)

`<name>` is the image's path under `images/` without its extension.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from vitsae.data.open import open_source
from vitsae.data.sources import FolderSource, ImageRecord, ImageSource
from vitsae.errors import VitsaeError


class ConceptMaskError(VitsaeError):
    """Masks that are missing, of the wrong size, or do not match their concept table."""


@runtime_checkable
class ConceptSource(ImageSource, Protocol):
    """An image source with per-pixel concept masks."""

    concepts: tuple[str, ...]

    def masks(self, index: int) -> dict[str, np.ndarray]: ...


def _read_png_array(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            if image.mode == "P":
                return np.asarray(image)  # palette indices, not colours
            if image.mode in ("RGB", "RGBA", "LA"):
                image = image.convert("L")
            return np.asarray(image)
    except (OSError, ValueError) as err:
        raise ConceptMaskError(f"cannot read mask {path}: {err}") from err


def read_concept_table(path: Path) -> dict[int, str]:
    """`value,concept` rows (a header row `value,concept` first) -> {pixel value: concept name}."""
    if not path.is_file():
        raise ConceptMaskError(f"{path} is missing: a labels/ folder needs a concept table value,concept")
    table: dict[int, str] = {}
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or [cell.strip() for cell in rows[0]] != ["value", "concept"]:
        raise ConceptMaskError(f"{path}: the first row must be the header 'value,concept'")
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip().lstrip("-").isdigit():
            raise ConceptMaskError(f"{path} line {line}: expected '<integer value>,<concept>', got {row}")
        value = int(row[0])
        if value in table:
            raise ConceptMaskError(f"{path} line {line}: value {value} is listed twice")
        table[value] = row[1].strip()
    return table


class MaskFolderSource:
    """The user's images with concept masks, in one of the two folder layouts of the module docstring."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not (self.root / "images").is_dir():
            raise ConceptMaskError(
                f"{self.root} has no images/ folder; a concept-mask folder holds images/ and masks/ "
                "(or labels/ + concepts.csv): see docs/dissection.md"
            )
        self.images = FolderSource(self.root / "images")
        masks_dir, labels_dir = self.root / "masks", self.root / "labels"
        if masks_dir.is_dir() == labels_dir.is_dir():
            found = "both" if masks_dir.is_dir() else "neither"
            raise ConceptMaskError(
                f"{self.root} has {found} of masks/ and labels/; it needs exactly one (docs/dissection.md)"
            )
        self.layout = "masks" if masks_dir.is_dir() else "labels"
        if self.layout == "labels":
            self.table = read_concept_table(self.root / "concepts.csv")
            self.concepts = tuple(dict.fromkeys(name for name in self.table.values() if name))
        else:
            self.table = {}
            self.concepts = tuple(sorted({p.stem for p in masks_dir.rglob("*.png")}))
        if not self.concepts:
            raise ConceptMaskError(f"{self.root}: no concepts found in its {self.layout}/ folder")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> ImageRecord:
        return self.images[index]

    def key(self, index: int) -> str:
        return self.images.key(index)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "concept-masks",
            "root": str(self.root.resolve()),
            "layout": self.layout,
            "concepts": list(self.concepts),
            "images": self.images.describe(),
        }

    def _name(self, index: int) -> str:
        return self.images.paths[int(index)].with_suffix("").as_posix()

    def masks(self, index: int) -> dict[str, np.ndarray]:
        """The masks of image `index`, checked to have the image's size."""
        name = self._name(index)
        image_path = self.images.root / self.images.paths[int(index)]
        with Image.open(image_path) as image:
            width, height = image.size
        if self.layout == "masks":
            folder = self.root / "masks" / name
            arrays = {p.stem: _read_png_array(p) for p in sorted(folder.glob("*.png"))}
            masks = {concept: array != 0 for concept, array in arrays.items()}
            sources = {concept: folder / f"{concept}.png" for concept in masks}
        else:
            path = self.root / "labels" / f"{name}.png"
            if not path.is_file():
                raise ConceptMaskError(
                    f"{path} is missing: every image needs a label map (image {image_path})"
                )
            label_map = _read_png_array(path)
            values = np.unique(label_map)
            unknown = sorted(int(v) for v in values if int(v) not in self.table)
            if unknown:
                raise ConceptMaskError(
                    f"{path} holds values {unknown} that {self.root / 'concepts.csv'} does not name "
                    f"(it names {sorted(self.table)}); add them (an empty concept ignores a value)"
                )
            masks = {}
            for value in values:
                concept = self.table[int(value)]
                if concept:
                    masks[concept] = (
                        masks[concept] | (label_map == value) if concept in masks else label_map == value
                    )
            sources = dict.fromkeys(masks, path)
        for concept, mask in masks.items():
            if mask.shape != (height, width):
                raise ConceptMaskError(
                    f"mask {sources[concept]} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
                    f"{image_path} is {width}x{height}; masks must have their image's size"
                )
        return masks


CONCEPT_SOURCE_SPECS = (
    "shapes:<n>[:<seed>[:<size>]]",
    "masks:<dir>",
    "<dir> holding images/ and masks/ or labels/",
)


def open_concept_source(spec: str) -> ConceptSource:
    """The concept source named by `spec`; a source without masks is a one-line error."""
    scheme, sep, rest = spec.partition(":")
    if sep and scheme == "shapes":
        return open_source(spec)
    if sep and scheme == "masks":
        return MaskFolderSource(rest)
    path = Path(spec)
    if path.is_dir() and (path / "images").is_dir():
        return MaskFolderSource(path)
    raise ConceptMaskError(
        f"image source {spec!r} has no concept masks; dissection needs one of: "
        f"{', '.join(CONCEPT_SOURCE_SPECS)} (see docs/dissection.md)"
    )


__all__ = [
    "CONCEPT_SOURCE_SPECS",
    "ConceptMaskError",
    "ConceptSource",
    "MaskFolderSource",
    "open_concept_source",
    "read_concept_table",
]
