"""Image sources: one interface over image folders, Hugging Face `datasets` and in-memory arrays.

An `ImageSource` has `__len__`, `__getitem__(i) -> ImageRecord` (an RGB PIL image, an optional integer
label, a stable key) and `describe() -> dict` (JSON-able; `data/open.py` re-creates the source from it
where the data lives on disk, and opens one from a CLI spec string).
The sources here also have `key(i)`, the key without decoding the image, which the loader uses to name
an image it had to skip. A source raises `BadImageError` for an image it cannot turn into RGB; the
batched loader skips and reports those.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from vitsae.data.rgb import BadImageError, open_rgb, to_rgb

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class ImageRecord:
    """One image of a source: RGB PIL image, class label (None when unlabelled) and a stable key."""

    image: Image.Image
    label: int | None
    key: str


@runtime_checkable
class ImageSource(Protocol):
    """What every stage reads images through."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> ImageRecord: ...

    def describe(self) -> dict[str, Any]: ...


def _check_index(index: int, length: int) -> int:
    index = int(index)
    if not 0 <= index < length:
        raise IndexError(f"image index {index} out of range for a source of {length} images")
    return index


class FolderSource:
    """Every image file under `root` (recursive), in sorted relative-path order.

    When images sit in sub-folders, the first path component is the class: labels index the sorted
    class names (or `classes` when given); images directly under `root` get label None.
    """

    def __init__(
        self,
        root: str | Path,
        classes: list[str] | None = None,
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        self.extensions = tuple(e.lower() for e in extensions)
        self.paths = sorted(
            p.relative_to(self.root)
            for p in self.root.rglob("*")
            if p.is_file() and p.suffix.lower() in self.extensions
        )
        found = sorted({p.parts[0] for p in self.paths if len(p.parts) > 1})
        if classes is not None:
            missing = sorted(set(found) - set(classes))
            if missing:
                raise ValueError(f"sub-folders {missing} are not among the given classes {classes}")
        self.classes = list(classes) if classes is not None else found
        self._class_index = {name: i for i, name in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.paths)

    def key(self, index: int) -> str:
        return self.paths[_check_index(index, len(self))].as_posix()

    def __getitem__(self, index: int) -> ImageRecord:
        rel = self.paths[_check_index(index, len(self))]
        label = self._class_index[rel.parts[0]] if len(rel.parts) > 1 else None
        return ImageRecord(open_rgb(self.root / rel), label, rel.as_posix())

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "folder",
            "root": str(self.root.resolve()),
            "classes": self.classes,
            "extensions": list(self.extensions),
            "n_images": len(self),
        }


class HFSource:
    """A Hugging Face `datasets.Dataset` with an image column and, when present, an integer label column
    (a dataset without `label_column` is unlabelled).

    Build it with `from_disk` (a `save_to_disk` directory) or `from_imagefolder` (a local folder read by
    the `imagefolder` builder) so that `describe()` can re-create it; a dataset passed in directly works
    the same but is described as in-memory.
    """

    def __init__(
        self,
        dataset: Any,
        image_column: str = "image",
        label_column: str | None = "label",
        origin: dict[str, Any] | None = None,
    ) -> None:
        columns = list(dataset.column_names)
        if image_column not in columns:
            raise ValueError(f"image column {image_column!r} not in dataset columns {columns}")
        if label_column is not None and label_column not in columns:
            label_column = None
        self.dataset = dataset
        self.image_column = image_column
        self.label_column = label_column
        self.origin = origin or {"loader": "in-memory"}

    @classmethod
    def from_disk(cls, path: str | Path, split: str | None = None, **kwargs: Any) -> HFSource:
        import datasets

        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split is None or split not in loaded:
                raise ValueError(f"{path} holds splits {list(loaded)}; pass split= one of them")
            loaded = loaded[split]
        origin = {"loader": "load_from_disk", "path": str(Path(path).resolve()), "split": split}
        return cls(loaded, origin=origin, **kwargs)

    @classmethod
    def from_imagefolder(
        cls, data_dir: str | Path, split: str = "train", cache_dir: str | None = None, **kwargs: Any
    ) -> HFSource:
        import datasets

        loaded = datasets.load_dataset(
            "imagefolder", data_dir=str(data_dir), split=split, cache_dir=cache_dir
        )
        origin = {"loader": "imagefolder", "path": str(Path(data_dir).resolve()), "split": split}
        return cls(loaded, origin=origin, **kwargs)

    def __len__(self) -> int:
        return len(self.dataset)

    def key(self, index: int) -> str:
        return f"{self.origin.get('split') or 'data'}/{_check_index(index, len(self))}"

    def __getitem__(self, index: int) -> ImageRecord:
        key = self.key(index)
        row = self.dataset[int(index)]
        try:
            value = row[self.image_column]
            image = value if isinstance(value, Image.Image) else Image.open(value["path"])
            rgb = to_rgb(image)
        except BadImageError:
            raise
        except Exception as err:  # a row the datasets decoder or PIL cannot read
            raise BadImageError(f"{type(err).__name__}: {err}") from err
        label = row[self.label_column] if self.label_column is not None else None
        return ImageRecord(rgb, None if label is None else int(label), key)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "hf",
            **self.origin,
            "image_column": self.image_column,
            "label_column": self.label_column,
            "n_images": len(self),
        }


class ArraySource:
    """In-memory images (N, H, W, 3): uint8, or float in [0, 1] (clipped, then rounded to uint8)."""

    def __init__(self, images_NHWC: np.ndarray, labels_N: np.ndarray | list[int] | None = None) -> None:
        images_NHWC = np.asarray(images_NHWC)
        if images_NHWC.ndim != 4 or images_NHWC.shape[-1] != 3:
            raise ValueError(f"expected images of shape (N, H, W, 3), got {images_NHWC.shape}")
        if images_NHWC.dtype != np.uint8:
            if not np.issubdtype(images_NHWC.dtype, np.floating):
                raise ValueError(f"expected uint8 or float images, got dtype {images_NHWC.dtype}")
            images_NHWC = (np.clip(images_NHWC, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        if labels_N is not None and len(labels_N) != len(images_NHWC):
            raise ValueError(f"{len(labels_N)} labels for {len(images_NHWC)} images")
        self.images_NHWC = images_NHWC
        self.labels_N = None if labels_N is None else np.asarray(labels_N, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.images_NHWC)

    def key(self, index: int) -> str:
        return f"array/{_check_index(index, len(self))}"

    def __getitem__(self, index: int) -> ImageRecord:
        index = _check_index(index, len(self))
        label = None if self.labels_N is None else int(self.labels_N[index])
        return ImageRecord(Image.fromarray(self.images_NHWC[index]), label, f"array/{index}")

    def describe(self) -> dict[str, Any]:
        import hashlib

        digest = hashlib.sha256(np.ascontiguousarray(self.images_NHWC).tobytes()).hexdigest()
        return {
            "kind": "array",
            "shape": list(self.images_NHWC.shape),
            "sha256": digest,
            "labelled": self.labels_N is not None,
            "n_images": len(self),
        }
