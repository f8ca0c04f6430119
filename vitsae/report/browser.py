"""The static feature browser: a folder of HTML, JS and JPEGs that opens from disk (file://), no server.

Layout of the written folder:

    index.html, feature.html        page shells (feature.html#<id> shows one feature)
    assets/                          style.css, index.js, feature.js
    data/index.js                    every feature's summary as one compact array (sort, search, pages)
    data/f/<id // 1000>/<id>.js      one feature's page data, loaded with a <script> tag
    img/<id // 1000>/<id>_*.jpg      that feature's pictures: heatmap overlays, patch crops, quantile examples
    vitsae-browser.json              what it was made from

Data files are JavaScript that hand JSON to a callback, because browsers refuse fetch() on file://.
Page text is inserted with textContent on the client; the shells' few substitutions are HTML-escaped.
The folder is built beside the target and renamed into place, so a reader never sees half a site.
"""

from __future__ import annotations

import html
import json
import multiprocessing
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitsae.analysis.logits import LogitEffects
from vitsae.analysis.stats import FeatureStats
from vitsae.config import check_choices, content_fields
from vitsae.data.preprocess import Preprocess
from vitsae.data.sources import ImageRecord, ImageSource
from vitsae.errors import InvalidValue
from vitsae.fileio import write_json_atomic
from vitsae.report.render import blend_heatmap, crop_patch, dimmed_thumbnail, mark_patch, save_jpeg

BROWSER_FORMAT_VERSION = 1
MARKER = "vitsae-browser.json"
ASSETS = ("style.css", "index.js", "feature.js")


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

    title: str = field(default="vitsae feature browser", metadata={"help": "page title"})
    thumb_size: int = field(default=144, metadata={"help": "pixel size of image thumbnails"})
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
    image_cache: int = field(default=512, metadata={"help": "decoded images kept in memory while rendering"})
    workers: int = field(
        default=1, metadata={"help": "processes that render feature pages (fork; Linux/macOS)"}
    )

    def __post_init__(self) -> None:
        check_choices(self)
        if min(self.thumb_size, self.patch_size) < 8:
            raise InvalidValue(
                f"thumb_size and patch_size must be >= 8 px, got {self.thumb_size}, {self.patch_size}"
            )
        if self.workers < 1:
            raise InvalidValue(f"workers must be >= 1, got {self.workers}")
        if any(not 0 <= q <= 1 for q in self.quantiles):
            raise InvalidValue(f"quantiles must lie in [0, 1], got {list(self.quantiles)}")


def bucket(feature: int) -> str:
    """The sub-folder of a feature's files (a thousand features per folder)."""
    return f"{feature // 1000:03d}"


def _round(value: float) -> float:
    return float(f"{value:.4g}")


def _js_json(payload: Any) -> str:
    """JSON that is also valid JavaScript: ensure_ascii escapes U+2028/2029 and all non-ASCII text."""
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":"))


class _Site:
    """Writes one browser into a fresh folder."""

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
        ablation: Mapping[str, Any] | None = None,
    ) -> None:
        self.stats, self.root, self.config = stats, root, config
        self.ablation = ablation
        self.source, self.preprocess = source, preprocess
        self.class_names, self.logits, self.feature_labels = class_names, logits, feature_labels
        self.context = {
            "title": config.title,
            "description": description,
            "n_features": stats.n_features,
            "n_tokens": stats.n_tokens,
            "n_images": stats.n_images,
            "thumb_size": config.thumb_size,
            "patch_size": config.patch_size,
        }
        self.record = lru_cache(maxsize=config.image_cache)(self._record)
        self.dimmed = lru_cache(maxsize=config.image_cache)(self._dimmed)
        self.frequency_F = stats.frequency_F()
        self.image_frequency_F = stats.image_fire_count_F.double() / max(stats.n_images, 1)
        self.mean_F = stats.mean_active_F()
        self.max_F = stats.max_activation_F()

    def _record(self, image: int) -> tuple[Image.Image, int | None, str]:
        record: ImageRecord = self.source[image]
        seen = self.preprocess.resize_crop(record.image) if self.preprocess else record.image.convert("RGB")
        return seen, record.label, record.key

    def _dimmed(self, image: int) -> np.ndarray:
        return dimmed_thumbnail(self.record(image)[0], self.config.thumb_size)

    def class_name(self, label: int | None) -> str | None:
        if label is None or label < 0:
            return None
        if self.class_names is not None and label < len(self.class_names):
            return str(self.class_names[label])
        return str(label)

    def write_shell(self) -> None:
        title = html.escape(self.config.title)
        package = resources.files("vitsae.report") / "assets"
        for name in ("index.html", "feature.html"):
            (self.root / name).write_text((package / name).read_text().replace("{{title}}", title))
        (self.root / "assets").mkdir()
        for name in ASSETS:
            (self.root / "assets" / name).write_text((package / name).read_text())

    def write_index(self) -> None:
        has_labels = bool(self.feature_labels)
        columns = [
            {"key": "id", "name": "feature"},
            {"key": "freq", "name": "frequency"},
            {"key": "img_freq", "name": "in images"},
            {"key": "mean", "name": "mean act."},
            {"key": "max", "name": "max act."},
        ]
        if has_labels:
            columns.append({"key": "label", "name": "concept label"})
        rows = []
        for f, freq, img_freq, mean, peak in zip(
            range(self.stats.n_features),
            self.frequency_F.tolist(),
            self.image_frequency_F.tolist(),
            self.mean_F.tolist(),
            self.max_F.tolist(),
            strict=True,
        ):
            row: list[Any] = [f, _round(freq), _round(img_freq), _round(mean), _round(peak)]
            if has_labels:
                row.append(self.feature_labels.get(f))
            rows.append(row)
        payload = {
            "title": self.config.title,
            "description": self.context["description"],
            "n_features": self.stats.n_features,
            "n_tokens": self.stats.n_tokens,
            "n_images": self.stats.n_images,
            "max_freq": _round(float(self.frequency_F.max())) if self.stats.n_features else 0,
            "columns": columns,
            "rows": rows,
        }
        (self.root / "data").mkdir(exist_ok=True)
        (self.root / "data" / "index.js").write_text(f"window.VITSAE_INDEX = {_js_json(payload)};\n")

    def write_feature(self, f: int) -> None:
        stats, config = self.stats, self.config
        img_dir = self.root / "img" / bucket(f)
        data: dict[str, Any] = {
            "id": f,
            "label": self.feature_labels.get(f),
            "context": self.context,
            "dead": bool(stats.fire_count_F[f] == 0),
            "freq": float(self.frequency_F[f]),
            "img_freq": float(self.image_frequency_F[f]),
            "mean": float(self.mean_F[f]),
            "max": float(self.max_F[f]),
            "fire_count": int(stats.fire_count_F[f]),
            "hist": {
                "edges": [_round(e) for e in stats.hist_edges.tolist()],
                "counts": stats.hist_FH[f].tolist(),
            },
            "sample_size": int((stats.sample_image_FS[f] >= 0).sum()),
            "top_images": [],
            "top_patches": [],
            "quantiles": [],
            "classes": [],
            "logits": None,
        }
        if self.logits is not None:
            # Only classes actually pushed that way: with few classes the two lists would otherwise overlap.
            data["logits"] = {
                direction: [
                    [self.class_name(int(c)) or str(int(c)), _round(float(v))]
                    for c, v in zip(
                        getattr(self.logits, f"{direction}_class_Fk")[f].tolist(),
                        getattr(self.logits, f"{direction}_value_Fk")[f].tolist(),
                        strict=True,
                    )
                    if (v > 0 if direction == "up" else v < 0)
                ][: config.n_logit_classes]
                for direction in ("up", "down")
            }
        if self.ablation is not None and str(f) in self.ablation["features"]:
            data["ablation"] = self._ablation(self.ablation["features"][str(f)])
        if not data["dead"] and self.source is None:
            data["images_note"] = "The browser was written without the image source, so no pictures."
        if not data["dead"] and self.source is not None:
            img_dir.mkdir(parents=True, exist_ok=True)
            self._pictures(f, img_dir, data)
        path = self.root / "data" / "f" / bucket(f) / f"{f}.js"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"vitsaeFeature({_js_json(data)});\n")

    def _ablation(self, effect: Mapping[str, Any]) -> dict[str, Any]:
        """A feature's measured ablation effect (`vitsae ablation`) as the page shows it."""
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

    def _pictures(self, f: int, img_dir: Path, data: dict[str, Any]) -> None:
        stats, config = self.stats, self.config
        layout = stats.layout
        grid_hw = layout.grid_hw
        rel = f"img/{bucket(f)}/{f}"
        vmax = float(stats.top_image_score_Fk[f, 0])
        labels: Counter[str] = Counter()
        for rank in range(min(config.n_images, stats.config.k_images)):
            image = int(stats.top_image_index_Fk[f, rank])
            if image < 0:
                break
            seen, label, key = self.record(image)
            stored = int(stats.top_image_label_Fk[f, rank])
            cls = self.class_name(stored if stored >= 0 else label)
            if cls is not None:
                labels[cls] += 1
            name = f"{f}_top{rank}.jpg"
            picture = blend_heatmap(self.dimmed(image), stats.image_map(f, rank).numpy(), vmax)
            save_jpeg(picture, img_dir / name)
            data["top_images"].append(
                {
                    "src": f"{rel}_top{rank}.jpg",
                    "score": _round(float(stats.top_image_score_Fk[f, rank])),
                    "image": image,
                    "key": key,
                    "cls": cls,
                }
            )
        data["classes"] = [[name, count] for name, count in labels.most_common()]
        for rank in range(min(config.n_patches, stats.config.k_patches)):
            image, token = int(stats.top_patch_image_Fk[f, rank]), int(stats.top_patch_token_Fk[f, rank])
            if image < 0:
                break
            row, col = layout.patch_of(token)
            seen, _, key = self.record(image)
            save_jpeg(
                crop_patch(seen, row, col, grid_hw, config.patch_size), img_dir / f"{f}_patch{rank}.jpg"
            )
            data["top_patches"].append(
                {
                    "src": f"{rel}_patch{rank}.jpg",
                    "value": _round(float(stats.top_patch_value_Fk[f, rank])),
                    "image": image,
                    "key": key,
                    "row": row,
                    "col": col,
                }
            )
        for i, (q, image, token, value) in enumerate(stats.quantile_examples(f, config.quantiles)):
            patch = layout.patch_of(token)
            seen, _, key = self.record(image)
            save_jpeg(mark_patch(seen, patch, grid_hw, config.thumb_size), img_dir / f"{f}_q{i}.jpg")
            data["quantiles"].append(
                {
                    "src": f"{rel}_q{i}.jpg",
                    "q": q,
                    "value": _round(value),
                    "image": image,
                    "key": key,
                    "token": token,
                    "patch": None if patch is None else list(patch),
                }
            )


_FORKED_SITE: _Site | None = None  # the site a forked page worker renders from


def _write_page_group(features: list[int]) -> int:
    assert _FORKED_SITE is not None
    for f in features:
        _FORKED_SITE.write_feature(f)
    return len(features)


def _write_pages(site: _Site, features: list[int], workers: int) -> None:
    """Write the feature pages, in `workers` forked processes when more than one.

    Forked workers inherit the site (statistics, image source) without pickling it; they share nothing
    they write, since every feature's files have their own names.
    """
    global _FORKED_SITE
    if workers == 1 or len(features) < 2:
        for f in features:
            site.write_feature(f)
        return
    groups = [features[start :: workers * 8] for start in range(min(len(features), workers * 8))]
    _FORKED_SITE = site
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            written = sum(pool.imap_unordered(_write_page_group, groups))
    finally:
        _FORKED_SITE = None
    if written != len(features):
        raise RuntimeError(f"page workers wrote {written} of {len(features)} feature pages")


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
) -> Path:
    """Write the browser for `stats` (or a statistics directory) into `out_dir`; return its index.html.

    `source` and `preprocess` give the images (as the model saw them) for the pictures; without a
    source the pages carry numbers only. `ablation` is the statistics folder's `ablation_effects.json`
    (measured effects of ablating each feature, shown beside the logit effects). `features` limits which
    features get a page (default all;
    dead features get a light page). `out_dir` is replaced whole if it holds an earlier browser and
    refused if it holds anything else.
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
    chosen = range(stats.n_features) if features is None else sorted(set(int(f) for f in features))
    bad = [f for f in chosen if not 0 <= f < stats.n_features]
    if bad:
        raise InvalidValue(f"features {bad[:10]} are outside the dictionary of {stats.n_features} features")
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
        )
        site.write_shell()
        site.write_index()
        _write_pages(site, list(chosen), config.workers)
        write_json_atomic(
            build / MARKER,
            {
                "format": "vitsae.browser",
                "format_version": BROWSER_FORMAT_VERSION,
                "config": content_fields(config),
                "n_features": stats.n_features,
                "pages": len(chosen),
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
