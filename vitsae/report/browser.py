"""The static feature browser: a folder of HTML, JS and JPEGs that opens from disk (file://), no server.

Format 2 (docs/browser.md). Layout of the written folder:

    index.html, feature.html         the feature index; feature.html#<id> shows one feature
    images.html, image.html          the image index; image.html#<image> is the image explorer
    assets/                          style.css, common.js, index.js, feature.js, images.js, image.js
    data/site.js                     what every page shares: title, token layout, histogram edges, colours
    data/index.js                    every feature's summary as one compact array (sort, search, pages)
    data/f/<id // 1000>/<id>.js      one feature's page data; activation maps as base64 uint8 numbers
    data/images.js                   the image index (images with explorer data)
    data/i/<image // 1000>/<image>.js  one image's explorer data (top features, error, embeddings per patch)
    img/<image // 1000>/<image>.jpg  one thumbnail per distinct image, shared by every page that shows it
    vitsae-browser.json              what it was made from

Heatmaps, patch crops and marked patches are drawn in the page on canvas over the shared thumbnail, so
a feature costs one data file instead of twenty JPEGs. Data files are JavaScript that hand JSON to a
callback, because browsers refuse fetch() on file://. Page text is inserted with textContent on the
client; the shells' few substitutions are HTML-escaped. The folder is built beside the target and renamed
into place, so a reader never sees half a site.
"""

from __future__ import annotations

import base64
import html
import json
import multiprocessing
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from vitsae.analysis.dissection import masks_in_model_frame
from vitsae.analysis.images import ImageData
from vitsae.analysis.logits import LogitEffects
from vitsae.analysis.neighbours import Neighbours
from vitsae.analysis.stats import FeatureStats
from vitsae.config import check_choices, content_fields
from vitsae.data.preprocess import Preprocess
from vitsae.data.sources import ImageSource
from vitsae.errors import InvalidValue
from vitsae.fileio import write_json_atomic
from vitsae.report.render import inferno_lut, save_jpeg, thumbnail

BROWSER_FORMAT_VERSION = 2
MARKER = "vitsae-browser.json"
MASK_SIZE = 32  # side of the concept masks drawn on top images of dissected features (bits, row-major)
PAGES = ("index.html", "feature.html", "images.html", "image.html")
ASSETS = ("style.css", "common.js", "index.js", "feature.js", "images.js", "image.js")


@dataclass(frozen=True)
class BrowserConfig:
    """How the browser is drawn, and (run-only, for `vitsae browse`) from which inputs.

    Python callers pass the statistics, images and logit effects to `write_browser` directly.
    """

    stats: Path | None = field(
        default=None,
        metadata={"help": "directory written by `vitsae stats`", "run_only": True, "required": True},
    )
    out: Path | None = field(
        default=None,
        metadata={"help": "browser directory to write (replaced)", "run_only": True, "required": True},
    )
    labels: Path | None = field(
        default=None, metadata={"help": 'JSON {"<feature id>": "concept label"}', "run_only": True}
    )
    features: tuple[int, ...] | None = field(
        default=None, metadata={"help": "only these features get pages (default: all)", "run_only": True}
    )
    no_images: bool = field(
        default=False, metadata={"help": "write numbers only, without the images", "run_only": True}
    )
    featureviz: Path | None = field(
        default=None,
        metadata={
            "help": "a `vitsae visualize` folder of SAE features to show on their pages",
            "run_only": True,
        },
    )
    circuit: Path | None = field(
        default=None,
        metadata={
            "help": "a `vitsae trace` folder: each feature's upstream and downstream features on its page",
            "run_only": True,
        },
    )
    progress: bool = field(default=True, metadata={"help": "show a progress bar", "run_only": True})

    title: str = field(default="vitsae feature browser", metadata={"help": "page title"})
    thumb_size: int = field(default=144, metadata={"help": "pixel size of image thumbnails"})
    thumb_quality: int = field(default=85, metadata={"help": "JPEG quality of the thumbnails (1-95)"})
    patch_size: int = field(default=80, metadata={"help": "pixel size of patch crops"})
    n_images: int = field(default=12, metadata={"help": "top images shown per feature (at most k_images)"})
    n_patches: int = field(default=8, metadata={"help": "top patches shown per feature"})
    quantiles: tuple[float, ...] = field(
        default=(0.05, 0.25, 0.5, 0.75, 0.95), metadata={"help": "activation quantiles to show examples at"}
    )
    n_logit_classes: int = field(
        default=6,
        metadata={
            "help": "classes listed per direction of logit effect (at most the 16 `vitsae stats` saves)"
        },
    )
    workers: int = field(
        default=1, metadata={"help": "processes that render pages and thumbnails (fork; Linux/macOS)"}
    )

    def __post_init__(self) -> None:
        check_choices(self)
        if min(self.thumb_size, self.patch_size) < 8:
            raise InvalidValue(
                f"thumb_size and patch_size must be >= 8 px, got {self.thumb_size}, {self.patch_size}"
            )
        if not 1 <= self.thumb_quality <= 95:
            raise InvalidValue(f"thumb_quality must lie in [1, 95], got {self.thumb_quality}")
        if self.workers < 1:
            raise InvalidValue(f"workers must be >= 1, got {self.workers}")
        if any(not 0 <= q <= 1 for q in self.quantiles):
            raise InvalidValue(f"quantiles must lie in [0, 1], got {list(self.quantiles)}")


def bucket(index: int) -> str:
    """The sub-folder of a feature's or an image's files (a thousand per folder)."""
    return f"{index // 1000:03d}"


def _round(value: float) -> float:
    return float(f"{value:.4g}")


def _js_json(payload: Any) -> str:
    """JSON that is also valid JavaScript: ensure_ascii escapes U+2028/2029 and all non-ASCII text."""
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":"))


def _b64(array: np.ndarray) -> str:
    """Little-endian bytes of an array as base64 (the page decodes them into a typed array)."""
    return base64.b64encode(
        np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    ).decode()


def _pack_mask(mask: np.ndarray) -> str:
    """A bool mask nearest-resized to MASK_SIZE x MASK_SIZE, bit-packed row-major, as base64."""
    small = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).resize(
        (MASK_SIZE, MASK_SIZE), Image.Resampling.NEAREST
    )
    return _b64(np.packbits(np.asarray(small) > 127))


class _Site:
    """Writes one browser into a fresh folder. Statistics are held as numpy arrays so that forked workers
    share them and each page costs array lookups, not tensor operations."""

    def __init__(
        self,
        stats: FeatureStats,
        root: Path,
        config: BrowserConfig,
        source: ImageSource | None,
        preprocess: Preprocess | None,
        class_names: Sequence[str] | None,
        logits: LogitEffects | None,
        feature_labels: Mapping[int, str],
        description: str,
        ablation: Mapping[str, Any] | None,
        neighbours: Neighbours | None,
        image_data: ImageData | None,
        dissection: Mapping[int, Mapping[str, Any]] | None = None,
        featureviz: Mapping[int, Mapping[str, Any]] | None = None,
        circuit: Mapping[str, Any] | None = None,
    ) -> None:
        self.stats, self.root, self.config = stats, root, config
        self.source, self.preprocess = source, preprocess
        self.class_names, self.feature_labels = class_names, feature_labels
        self.description, self.ablation = description, ablation
        self.neighbours, self.image_data = neighbours, image_data
        self.dissection, self.featureviz, self.circuit = dissection, featureviz, circuit
        self.packed_masks: dict[int, dict[str, str]] = {}  # image -> {concept: `_pack_mask`}
        k_images = min(config.n_images, stats.config.k_images)
        k_patches = min(config.n_patches, stats.config.k_patches)
        self.fire_count_F = stats.fire_count_F.numpy()
        self.frequency_F = stats.frequency_F().numpy()
        self.image_frequency_F = (stats.image_fire_count_F.double() / max(stats.n_images, 1)).numpy()
        self.mean_F = stats.mean_active_F().numpy()
        self.max_F = stats.max_activation_F().numpy()
        self.hist_FH = stats.hist_FH.numpy()
        self.image_index_Fk = stats.top_image_index_Fk[:, :k_images].numpy()
        self.image_score_Fk = stats.top_image_score_Fk[:, :k_images].numpy()
        self.image_label_Fk = stats.top_image_label_Fk[:, :k_images].numpy()
        self.image_map_FkP = stats.top_image_map_FkP[:, :k_images].numpy()
        self.patch_image_Fk = stats.top_patch_image_Fk[:, :k_patches].numpy()
        self.patch_value_Fk = stats.top_patch_value_Fk[:, :k_patches].numpy()
        self.patch_token_Fk = stats.top_patch_token_Fk[:, :k_patches].numpy()
        self.logits = (
            None
            if logits is None
            else {
                direction: (
                    getattr(logits, f"{direction}_class_Fk").numpy(),
                    getattr(logits, f"{direction}_value_Fk").numpy(),
                )
                for direction in ("up", "down")
            }
        )
        self.keys: dict[int, str] = {}  # image -> key, label; filled by the thumbnail pass
        self.labels: dict[int, int | None] = {}

    def class_name(self, label: int | None) -> str | None:
        if label is None or label < 0:
            return None
        if self.class_names is not None and label < len(self.class_names):
            return str(self.class_names[label])
        return str(label)

    # ---- what every page shares -----------------------------------------------------------------------

    def write_shell(self) -> None:
        title = html.escape(self.config.title)
        package = resources.files("vitsae.report") / "assets"
        for name in PAGES:
            (self.root / name).write_text((package / name).read_text().replace("{{title}}", title))
        (self.root / "assets").mkdir()
        for name in ASSETS:
            (self.root / "assets" / name).write_text((package / name).read_text())

    def write_site(self, image_pages: list[int]) -> None:
        stats, layout = self.stats, self.stats.layout
        payload = {
            "format_version": BROWSER_FORMAT_VERSION,
            "title": self.config.title,
            "description": self.description,
            "n_features": stats.n_features,
            "n_tokens": stats.n_tokens,
            "n_images": stats.n_images,
            "thumb_size": self.config.thumb_size,
            "mask_size": MASK_SIZE,
            "patch_size": self.config.patch_size,
            "layout": {"n_cls": layout.n_cls, "n_registers": layout.n_registers, "grid_hw": layout.grid_hw},
            "hist_edges": [_round(e) for e in stats.hist_edges.tolist()],
            "inferno": base64.b64encode(inferno_lut()).decode(),
            "thumbs": self.source is not None,
            "image_pages": image_pages,
        }
        (self.root / "data").mkdir(exist_ok=True)
        (self.root / "data" / "site.js").write_text(f"window.VITSAE_SITE = {_js_json(payload)};\n")

    def write_index(self, chosen: Sequence[int]) -> None:
        has_labels = bool(self.feature_labels)
        with_page = set(chosen)
        columns = [
            {"key": "id", "name": "feature"},
            {"key": "freq", "name": "frequency"},
            {"key": "img_freq", "name": "in images"},
            {"key": "mean", "name": "mean act."},
            {"key": "max", "name": "max act."},
            {"key": "top", "name": "top image"},
        ]
        if self.featureviz is not None:
            columns.append({"key": "viz", "name": "visualisation"})
        if self.dissection is not None:
            columns += [{"key": "concept", "name": "dissection concept"}, {"key": "iou", "name": "IoU"}]
        if has_labels:
            columns.append({"key": "label", "name": "concept label"})
        top_image_F = (
            self.image_index_Fk[:, 0] if self.image_index_Fk.shape[1] else np.full(len(self.max_F), -1)
        )
        rows = []
        for f, freq, img_freq, mean, peak, top in zip(
            range(self.stats.n_features),
            self.frequency_F.tolist(),
            self.image_frequency_F.tolist(),
            self.mean_F.tolist(),
            self.max_F.tolist(),
            top_image_F.tolist(),
            strict=True,
        ):
            row: list[Any] = [f, _round(freq), _round(img_freq), _round(mean), _round(peak)]
            row.append(top if top >= 0 and self.source is not None else None)
            if self.featureviz is not None:  # the first sample, copied there by `_viz` with the page
                row.append(self._viz_name(f, 0) if f in self.featureviz and f in with_page else None)
            if self.dissection is not None:
                concept = self.dissection.get(f)
                row += [None, None] if concept is None else [concept["concept"], concept["iou"]]
            if has_labels:
                row.append(self.feature_labels.get(f))
            rows.append(row)
        payload = {
            "title": self.config.title,
            "description": self.description,
            "n_features": self.stats.n_features,
            "n_tokens": self.stats.n_tokens,
            "n_images": self.stats.n_images,
            "max_freq": _round(float(self.frequency_F.max())) if self.stats.n_features else 0,
            "columns": columns,
            "rows": rows,
        }
        (self.root / "data" / "index.js").write_text(f"window.VITSAE_INDEX = {_js_json(payload)};\n")

    # ---- thumbnails -----------------------------------------------------------------------------------

    def images_shown(self, features: Sequence[int]) -> list[int]:
        """Every distinct image a chosen feature's page shows (top images, top patches, quantile examples)."""
        chosen = np.asarray(features, dtype=np.int64)
        shown = [self.image_index_Fk[chosen].ravel(), self.patch_image_Fk[chosen].ravel()]
        quantile_images = [image for f in features for _, image, _, _ in self._quantiles(f)]
        shown.append(np.asarray(quantile_images, dtype=np.int64))
        if self.image_data is not None:
            shown.append(self.image_data.image_I.numpy())
        every = np.unique(np.concatenate(shown))
        return every[every >= 0].tolist()

    def write_thumbnails(self, images: Sequence[int]) -> list[tuple[int, str, int | None]]:
        """Write the thumbnails of `images`; return each one's (image, key, label)."""
        assert self.source is not None
        written = []
        for image in images:
            record = self.source[image]
            seen = self.preprocess.resize_crop(record.image) if self.preprocess else record.image
            path = self.root / "img" / bucket(image) / f"{image}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_jpeg(thumbnail(seen, self.config.thumb_size), path, self.config.thumb_quality)
            written.append((image, record.key, record.label))
        return written

    # ---- feature pages --------------------------------------------------------------------------------

    def _quantiles(self, f: int) -> list[tuple[float, int, int, float]]:
        if self.fire_count_F[f] == 0:
            return []
        return self.stats.quantile_examples(f, self.config.quantiles)

    def _image_cls(self, image: int, stored: int) -> str | None:
        return self.class_name(stored if stored >= 0 else self.labels.get(image))

    def feature_data(self, f: int) -> dict[str, Any]:
        counts = self.hist_FH[f]
        nonzero = np.flatnonzero(counts)
        lo, hi = (int(nonzero[0]), int(nonzero[-1]) + 1) if nonzero.size else (0, 0)
        data: dict[str, Any] = {
            "id": f,
            "label": self.feature_labels.get(f),
            "dead": bool(self.fire_count_F[f] == 0),
            "freq": float(self.frequency_F[f]),
            "img_freq": float(self.image_frequency_F[f]),
            "mean": float(self.mean_F[f]),
            "max": float(self.max_F[f]),
            "fire_count": int(self.fire_count_F[f]),
            "hist": [lo, counts[lo:hi].tolist()],
            "sample_size": int((self.stats.sample_image_FS[f] >= 0).sum()),
            "top_images": [],
            "top_patches": [],
            "quantiles": [],
            "classes": [],
            "logits": None,
        }
        if self.logits is not None:
            data["logits"] = self._logits(f)
        if self.ablation is not None and str(f) in self.ablation["features"]:
            data["ablation"] = self._ablation(self.ablation["features"][str(f)])
        if self.neighbours is not None:
            data["near"] = self._near(f)
        if self.dissection is not None and f in self.dissection:
            data["concept"] = dict(self.dissection[f])
        if self.featureviz is not None and f in self.featureviz:
            data["viz"] = self._viz(f)
        if self.circuit is not None and f in self.circuit["features"]:
            data["circuit"] = {
                "target": self.circuit["target"],
                "hook": self.circuit["hook"],
                **self.circuit["features"][f],
            }
        if data["dead"]:
            return data
        if self.source is None:
            data["images_note"] = "The browser was written without the image source, so no pictures."
        self._examples(f, data)
        return data

    def _examples(self, f: int, data: dict[str, Any]) -> None:
        """Top images (with maps), top patches and quantile examples: image ids, numbers and keys."""
        labels: Counter[str] = Counter()
        has_grid = self.stats.layout.n_patches > 0
        concept = self._concept_of(f)
        for image, score, stored, map_P in zip(
            self.image_index_Fk[f].tolist(),
            self.image_score_Fk[f].tolist(),
            self.image_label_Fk[f].tolist(),
            self.image_map_FkP[f],
            strict=True,
        ):
            if image < 0:
                break
            cls = self._image_cls(image, stored)
            if cls is not None:
                labels[cls] += 1
            data["top_images"].append(
                [
                    image,
                    _round(score),
                    cls,
                    self.keys.get(image, str(image)),
                    _b64(map_P) if has_grid else None,
                    None if concept is None else self.concept_mask(image, concept),
                ]
            )
        data["classes"] = [[name, count] for name, count in labels.most_common()]
        for image, value, token in zip(
            self.patch_image_Fk[f].tolist(),
            self.patch_value_Fk[f].tolist(),
            self.patch_token_Fk[f].tolist(),
            strict=True,
        ):
            if image < 0:
                break
            data["top_patches"].append([image, _round(value), self.keys.get(image, str(image)), token])
        for q, image, token, value in self._quantiles(f):
            data["quantiles"].append([q, image, _round(value), self.keys.get(image, str(image)), token])

    def _concept_of(self, f: int) -> str | None:
        """The dissection concept of feature `f` when the image source has concept masks to show."""
        if self.dissection is None or f not in self.dissection or not hasattr(self.source, "masks"):
            return None
        return str(self.dissection[f]["concept"])

    def concept_mask(self, image: int, concept: str) -> str:
        """The concept's mask in `image`, in the model's frame, at MASK_SIZE x MASK_SIZE, bit-packed, base64
        (all zeros where the image does not hold the concept)."""
        if image not in self.packed_masks:  # an image shows on many features' pages: render its masks once
            masks = masks_in_model_frame(self.source.masks(image), self.preprocess)  # type: ignore[union-attr]
            self.packed_masks[image] = {name: _pack_mask(mask) for name, mask in masks.items()}
        packed = self.packed_masks[image].get(concept)
        return (
            packed if packed is not None else _b64(np.packbits(np.zeros(MASK_SIZE * MASK_SIZE, dtype=bool)))
        )

    def _logits(self, f: int) -> dict[str, list[list[Any]]]:
        # Only classes actually pushed that way: with few classes the two lists would otherwise overlap.
        assert self.logits is not None
        out = {}
        for direction, (class_Fk, value_Fk) in self.logits.items():
            out[direction] = [
                [self.class_name(int(c)) or str(int(c)), _round(float(v))]
                for c, v in zip(class_Fk[f].tolist(), value_Fk[f].tolist(), strict=True)
                if (v > 0 if direction == "up" else v < 0)
            ][: self.config.n_logit_classes]
        return out

    def _near(self, f: int) -> dict[str, list[list[Any]]]:
        n = self.neighbours
        assert n is not None
        return {
            kind: [
                [int(g), _round(float(v))]
                for g, v in zip(index_Fk[f].tolist(), value_Fk[f].tolist(), strict=True)
                if g >= 0
            ]
            for kind, index_Fk, value_Fk in (
                ("decoder", n.decoder_index_Fk, n.decoder_cosine_Fk),
                ("coact", n.coact_index_Fk, n.coact_jaccard_Fk),
            )
        }

    @staticmethod
    def _viz_name(f: int, sample: int) -> str:
        return f"viz/{bucket(f)}/{f}_{sample}.png"

    def _viz(self, f: int) -> dict[str, Any]:
        """Copy a feature's visualisations into `viz/` and describe them for its page."""
        assert self.featureviz is not None
        entry = self.featureviz[f]
        names = []
        for sample, source in enumerate(entry["files"]):
            name = self._viz_name(f, sample)
            (self.root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, self.root / name)
            names.append(name)
        return {
            "kind": entry["kind"],
            "images": names,
            "objective": entry["objective"],
            "ratio": entry["ratio"],
        }

    def _ablation(self, effect: Mapping[str, Any]) -> dict[str, Any]:
        """A feature's measured ablation effect (`vitsae ablation`) as the page shows it."""
        assert self.ablation is not None
        names = self.ablation["class_names"]
        change = list(zip(names, effect["mean_logit_change"], strict=True))
        k = self.config.n_logit_classes
        return {
            "n_images": effect["n_images"],
            "n_changed": effect["n_changed"],
            "moved": [[names[a], names[b], n] for a, b, n in effect["moved"]],
            "up": [[c, _round(v)] for c, v in sorted(change, key=lambda cv: -cv[1]) if v > 0][:k],
            "down": [[c, _round(v)] for c, v in sorted(change, key=lambda cv: cv[1]) if v < 0][:k],
        }

    def write_features(self, features: Sequence[int]) -> int:
        for f in features:
            path = self.root / "data" / "f" / bucket(f) / f"{f}.js"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"vitsaeFeature({_js_json(self.feature_data(f))});\n")
        return len(features)

    # ---- image explorer -------------------------------------------------------------------------------

    def _predictions(self) -> dict[str, Any] | None:
        assert self.image_data is not None
        return self.image_data.meta.get("predictions")

    def image_rows(self) -> list[list[Any]]:
        """The image index: [image, key, class, top-1 prediction, reconstructed fraction] per image with
        explorer data (prediction null without a classifier)."""
        assert self.image_data is not None
        predictions = self._predictions()
        return [
            [
                image,
                self.keys.get(image, str(image)),
                self.class_name(self.labels.get(image)),
                None if predictions is None else predictions["top"][position][0][0],
                _round(recon),
            ]
            for position, (image, recon) in enumerate(
                zip(self.image_data.image_I.tolist(), self.image_data.recon_I.tolist(), strict=True)
            )
        ]

    def write_image_index(self) -> None:
        assert self.image_data is not None
        meta = {k: v for k, v in self.image_data.meta.items() if k != "predictions"}
        payload = {"rows": self.image_rows(), "meta": meta, "predictions": self._predictions() is not None}
        (self.root / "data" / "images.js").write_text(f"window.VITSAE_IMAGES = {_js_json(payload)};\n")

    def image_page(self, position: int) -> dict[str, Any]:
        data = self.image_data
        assert data is not None
        image = int(data.image_I[position])
        index_Tc = data.code_index_ITc[position].numpy()
        features = sorted(set(index_Tc[index_Tc >= 0].tolist()))
        return {
            "id": image,
            "key": self.keys.get(image, str(image)),
            "cls": self.class_name(self.labels.get(image)),
            "recon": _round(float(data.recon_I[position])),
            "tokens": _b64(data.token_T.numpy().astype(np.int32)),
            "codes": _b64(index_Tc.astype(np.int32)),
            "values": _b64(data.code_value_ITc[position].numpy().astype(np.float32)),
            "error": _b64(data.error_IT[position].numpy().astype(np.float32)),
            "embed": _b64(data.embed_ITd[position].numpy().astype(np.int8)),
            "n_codes": int(index_Tc.shape[1]),
            "dims": int(data.embed_ITd.shape[2]),
            "similar": [int(data.image_I[j]) for j in data.similar_In[position].tolist()],
            "top": None if self._predictions() is None else self._predictions()["top"][position],
            "ablated": None if self._predictions() is None else self._predictions()["ablated"][position],
            "features": {
                str(f): {
                    "label": self.feature_labels.get(f),
                    "up": self._logits(f)["up"][:3] if self.logits is not None else [],
                }
                for f in features
            },
        }

    def write_image_pages(self, positions: Sequence[int]) -> int:
        assert self.image_data is not None
        for position in positions:
            image = int(self.image_data.image_I[position])
            path = self.root / "data" / "i" / bucket(image) / f"{image}.js"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"vitsaeImage({_js_json(self.image_page(position))});\n")
        return len(positions)


_FORKED: Callable[[list[int]], Any] | None = None  # the work a forked worker runs on its group


def _run_group(group: list[int]) -> Any:
    assert _FORKED is not None
    return _FORKED(group)


def _in_groups(
    work: Callable[[list[int]], Any], items: list[int], workers: int, bar: tqdm, group_size: int = 64
) -> list[Any]:
    """Run `work` over `items` in groups, in `workers` forked processes when more than one.

    Forked workers inherit the site (statistics, image source) without pickling it; they share nothing
    they write, since every feature's and image's files have their own names.
    """
    global _FORKED
    groups = [items[start : start + group_size] for start in range(0, len(items), group_size)]
    results = []
    if workers == 1 or len(groups) < 2:
        for group in groups:
            results.append(work(group))
            bar.update(len(group))
        return results
    _FORKED = work
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for group, result in zip(groups, pool.imap(_run_group, groups), strict=True):
                results.append(result)
                bar.update(len(group))
    finally:
        _FORKED = None
    return results


def write_browser(
    stats: FeatureStats | str | Path,
    out_dir: str | Path,
    *,
    source: ImageSource | None = None,
    preprocess: Preprocess | None = None,
    class_names: Sequence[str] | None = None,
    logits: LogitEffects | None = None,
    feature_labels: Mapping[int, str] | None = None,
    features: Iterable[int] | None = None,
    config: BrowserConfig | None = None,
    description: str = "",
    ablation: Mapping[str, Any] | None = None,
    neighbours: Neighbours | None = None,
    image_data: ImageData | None = None,
    dissection: Mapping[int, Mapping[str, Any]] | None = None,
    featureviz: Mapping[int, Mapping[str, Any]] | None = None,
    circuit: Mapping[str, Any] | None = None,
) -> Path:
    """Write the browser for `stats` (or a statistics directory) into `out_dir`; return its index.html.

    `source` and `preprocess` give the images (as the model saw them) for the thumbnails; without a
    source the pages carry numbers only. `ablation` is the statistics folder's `ablation_effects.json`
    (measured effects of ablating each feature, shown beside the logit effects), `neighbours` its nearest
    features and `image_data` its image explorer data (`vitsae stats --images N`). `features` limits which
    features get a page (default all; dead features get a light page). `dissection` and `featureviz` are
    `report.panels.read_dissection` / `read_featureviz` results (concept labels, visualisations), `circuit`
    a `read_circuit` result (upstream and downstream features from `vitsae trace`).
    `out_dir` is replaced whole if it holds an earlier browser and refused if it holds anything else.
    """
    config = config or BrowserConfig()
    if not isinstance(stats, FeatureStats):
        stats = FeatureStats.load(stats)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise FileExistsError(
            f"{out_dir} exists and is not a vitsae browser (no {MARKER}); choose an empty or new directory"
        )
    if logits is not None and logits.up_class_Fk.shape[0] != stats.n_features:
        raise InvalidValue(
            f"logit effects cover {logits.up_class_Fk.shape[0]} features, the statistics {stats.n_features}"
        )
    if neighbours is not None and neighbours.decoder_index_Fk.shape[0] != stats.n_features:
        raise InvalidValue(
            f"the nearest features cover {neighbours.decoder_index_Fk.shape[0]} features, the statistics "
            f"{stats.n_features}: rerun `vitsae stats`"
        )
    chosen = list(range(stats.n_features)) if features is None else sorted(set(int(f) for f in features))
    bad = [f for f in chosen if not 0 <= f < stats.n_features]
    if bad:
        raise InvalidValue(f"features {bad[:10]} are outside the dictionary of {stats.n_features} features")
    if source is not None and image_data is not None:
        outside = [i for i in image_data.image_I.tolist() if not 0 <= i < len(source)]
        if outside:
            raise InvalidValue(f"explorer images {outside[:10]} are not in the image source of {len(source)}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        site = _Site(
            stats,
            build,
            config,
            source,
            preprocess,
            class_names,
            logits,
            dict(feature_labels or {}),
            description,
            ablation,
            neighbours,
            image_data,
            dissection,
            featureviz,
            circuit,
        )
        _build(site, chosen, config)
        write_json_atomic(
            build / MARKER,
            {
                "format": "vitsae.browser",
                "format_version": BROWSER_FORMAT_VERSION,
                "config": content_fields(config),
                "n_features": stats.n_features,
                "pages": len(chosen),
                "image_pages": 0 if image_data is None else int(image_data.image_I.numel()),
                "stats_meta": stats.meta,
                "source": None if source is None else source.describe(),
            },
        )
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            out_dir.rename(old / "site")
            build.rename(out_dir)
            shutil.rmtree(old)
        else:
            build.rename(out_dir)
    finally:
        if build.exists():
            shutil.rmtree(build)
    return out_dir / "index.html"


def _build(site: _Site, chosen: list[int], config: BrowserConfig) -> None:
    """Thumbnails first (they give the pages each image's key and label), then the pages."""
    image_data = site.image_data
    positions = [] if image_data is None else list(range(int(image_data.image_I.numel())))
    site.write_shell()
    site.write_site([] if image_data is None else image_data.image_I.tolist())
    site.write_index(chosen)
    if site.source is not None:
        shown = site.images_shown(chosen)
        with tqdm(total=len(shown), unit="img", desc="thumbnails", disable=not config.progress) as bar:
            for group in _in_groups(site.write_thumbnails, shown, config.workers, bar):
                for image, key, label in group:
                    site.keys[image], site.labels[image] = key, label
    with tqdm(total=len(chosen), unit="feature", desc="feature pages", disable=not config.progress) as bar:
        written = sum(_in_groups(site.write_features, chosen, config.workers, bar))
    if written != len(chosen):
        raise RuntimeError(f"page workers wrote {written} of {len(chosen)} feature pages")
    if image_data is not None:
        site.write_image_index()
        with tqdm(total=len(positions), unit="img", desc="image pages", disable=not config.progress) as bar:
            _in_groups(site.write_image_pages, positions, config.workers, bar)
