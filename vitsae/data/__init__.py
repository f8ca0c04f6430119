"""Image sources, preprocessing, batched loading, and the procedural shapes dataset."""

from vitsae.data.loader import NO_LABEL, ImageBatch, ImageLoader, SkippedImage
from vitsae.data.open import SOURCE_SPECS, open_source, source_from_description
from vitsae.data.preprocess import Preprocess
from vitsae.data.rgb import ALPHA_BACKGROUND, BadImageError, open_rgb, to_rgb
from vitsae.data.shapes import (
    CLASS_NAMES,
    CONCEPT_FAMILIES,
    CONCEPTS,
    ShapeObject,
    ShapesConfig,
    ShapesDataset,
    ShapesSample,
    export_shapes,
    label_for,
    object_mask,
    read_exported_masks,
)
from vitsae.data.sources import (
    ArraySource,
    FolderSource,
    HFSource,
    ImageRecord,
    ImageSource,
)

__all__ = [
    "ALPHA_BACKGROUND",
    "CLASS_NAMES",
    "CONCEPTS",
    "CONCEPT_FAMILIES",
    "NO_LABEL",
    "SOURCE_SPECS",
    "ArraySource",
    "BadImageError",
    "FolderSource",
    "HFSource",
    "ImageBatch",
    "ImageLoader",
    "ImageRecord",
    "ImageSource",
    "Preprocess",
    "ShapeObject",
    "ShapesConfig",
    "ShapesDataset",
    "ShapesSample",
    "SkippedImage",
    "export_shapes",
    "label_for",
    "object_mask",
    "open_rgb",
    "open_source",
    "read_exported_masks",
    "source_from_description",
    "to_rgb",
]
