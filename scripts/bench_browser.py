"""Benchmark the feature browser at dictionary scale: size and files per feature, generation rate, and the
index sorting and searching in headless Chromium.

Synthetic statistics of F features over N images (ViT-B/16 layout: CLS + 14x14 patches, 16 top images,
16 top patches and 64 sampled tokens per feature, every top image drawn at random so the pages show
about every image) and a synthetic image source of 224x224 pictures with photo-like JPEG sizes (smooth
colour fields plus grain; shapes or flat images would compress far better than photos). The baseline is
the same `write_browser` call on another checkout (format 1 on main: one JPEG per picture), run in a
subprocess on a subset of features and reported per feature.

    .venv/bin/python scripts/bench_browser.py --features 24576 --images 20000 --workers 2 \
        --baseline-src /work/main --baseline-features 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vitsae.analysis.stats import FeatureStats, StatsConfig
from vitsae.data.sources import ImageRecord
from vitsae.tokens import TokenLayout

LAYOUT = TokenLayout(n_cls=1, n_registers=0, grid_hw=(14, 14), width=768)


class SyntheticPhotos:
    """224x224 pictures whose JPEGs are about as large as photos' (smooth colour fields plus grain).

    A pool of `POOL` pictures is made once and cycled, so the benchmark times the browser, not the making
    of pictures (a real source's decoding is not counted either).
    """

    POOL = 256

    def __init__(self, n: int) -> None:
        self.n = n
        self.pool = [self._make(i) for i in range(min(n, self.POOL))]

    @staticmethod
    def _make(seed: int) -> Image.Image:
        rng = np.random.default_rng(seed)
        colours = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        field = Image.fromarray(colours).resize((224, 224), Image.Resampling.BICUBIC)
        pixels = np.asarray(field, dtype=np.float32) + rng.normal(0, 10, (224, 224, 3))
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> ImageRecord:
        picture = self.pool[index % len(self.pool)]
        return ImageRecord(image=picture, label=int(index % 1000), key=f"synthetic/{index:07d}.jpg")

    def describe(self) -> dict:
        return {"kind": "synthetic-photos", "n": self.n}


def synthetic_stats(n_features: int, n_images: int, seed: int = 0) -> FeatureStats:
    gen = torch.Generator().manual_seed(seed)
    config = StatsConfig(k_images=16, k_patches=16, n_samples=64)
    k, s, p = config.k_images, config.n_samples, LAYOUT.n_patches

    def ranked(shape):
        return torch.sort(torch.rand(shape, generator=gen) * 4, dim=1, descending=True).values

    fire = torch.randint(1, 200_000, (n_features,), generator=gen)
    return FeatureStats(
        config=config,
        layout=LAYOUT,
        n_tokens=n_images * LAYOUT.n_tokens,
        n_images=n_images,
        fire_count_F=fire,
        act_sum_F=fire.double() * 1.5,
        max_act_F=torch.rand(n_features, generator=gen) * 4 + 4,
        image_fire_count_F=fire // 10,
        hist_edges=config.hist_edges(),
        hist_FH=torch.randint(0, 1000, (n_features, config.hist_bins), generator=gen),
        top_image_score_Fk=ranked((n_features, k)),
        top_image_index_Fk=torch.randint(0, n_images, (n_features, k), generator=gen),
        top_image_label_Fk=torch.full((n_features, k), -1),
        top_image_map_FkP=torch.randint(0, 256, (n_features, k, p), generator=gen, dtype=torch.uint8),
        top_patch_value_Fk=ranked((n_features, k)),
        top_patch_image_Fk=torch.randint(0, n_images, (n_features, k), generator=gen),
        top_patch_token_Fk=torch.randint(1, LAYOUT.n_tokens, (n_features, k), generator=gen),
        sample_value_FS=torch.rand((n_features, s), generator=gen) * 4,
        sample_image_FS=torch.randint(0, n_images, (n_features, s), generator=gen),
        sample_token_FS=torch.randint(0, LAYOUT.n_tokens, (n_features, s), generator=gen),
    )


def folder_size(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def write_once(n_features: int, n_images: int, pages: int, workers: int) -> dict:
    """Write the browser of `pages` of `n_features` features with whichever vitsae is on the path."""
    import vitsae.report.browser as browser

    stats = synthetic_stats(n_features, n_images)
    fields = {"workers": workers}
    if "progress" in browser.BrowserConfig.__dataclass_fields__:
        fields["progress"] = True
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "site"
        start = time.perf_counter()
        browser.write_browser(
            stats,
            out,
            source=SyntheticPhotos(n_images),
            features=range(pages),
            config=browser.BrowserConfig(**fields),
        )
        seconds = time.perf_counter() - start
        size, files = folder_size(out)
        thumbs = folder_size(out / "img") if (out / "img").exists() else (0, 0)
    return {
        "format": browser.BROWSER_FORMAT_VERSION,
        "pages": pages,
        "seconds": seconds,
        "bytes": size,
        "files": files,
        "thumb_bytes": thumbs[0],
        "thumbs": thumbs[1],
    }


def time_index_in_chromium(n_features: int, chromium: str) -> dict:
    """Seconds to load the index of n_features, sort it by a column, and search it, in headless Chromium."""
    from playwright.sync_api import sync_playwright

    from vitsae.report.browser import BrowserConfig, write_browser

    stats = synthetic_stats(n_features, 1000)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        site = Path(tmp) / "site"
        write_browser(stats, site, features=[], config=BrowserConfig(progress=False))
        browser = playwright.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox"])
        page = browser.new_page()
        start = time.perf_counter()
        page.goto((site / "index.html").as_uri())
        page.wait_for_selector("body[data-ready='1']")
        loaded = time.perf_counter() - start
        start = time.perf_counter()
        page.click("th[data-key='max']")
        page.wait_for_function(
            "(document.querySelector('th.sorted-desc') || {dataset: {}}).dataset.key === 'max'"
        )
        sorted_s = time.perf_counter() - start
        start = time.perf_counter()
        page.fill("#search", str(n_features - 1))
        page.wait_for_function("document.querySelectorAll('#rows tr').length === 1")
        searched = time.perf_counter() - start  # includes the page's 80 ms typing debounce
        browser.close()
    return {"load_s": loaded, "sort_s": sorted_s, "search_s": searched}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--features", type=int, default=24576)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline-src", type=Path, help="a checkout whose browser is the baseline")
    parser.add_argument("--baseline-features", type=int, default=256)
    parser.add_argument("--index-features", type=int, default=50000)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument(
        "--one", action="store_true", help=argparse.SUPPRESS
    )  # subprocess: print one JSON run
    parser.add_argument("--pages", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(write_once(args.features, args.images, args.pages, args.workers)))
        return

    runs = {"this checkout": write_once(args.features, args.images, args.features, args.workers)}
    if args.baseline_src is not None:
        command = [
            sys.executable,
            __file__,
            "--one",
            "--features",
            str(args.features),
            "--images",
            str(args.images),
        ]
        command += ["--workers", str(args.workers), "--pages", str(args.baseline_features)]
        env = {**os.environ, "PYTHONPATH": str(args.baseline_src.resolve())}
        done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        runs[f"baseline ({args.baseline_src})"] = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"# {platform.node()}, {os.cpu_count()} cores; {args.features} features over {args.images} images, "
        f"{args.workers} workers"
    )
    print("| browser | format | pages | KB/feature | files/feature | features/s | thumbnails (KB each) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, run in runs.items():
        thumbs = (
            f"{run['thumbs']} ({run['thumb_bytes'] / max(run['thumbs'], 1) / 1e3:.1f})"
            if run["thumbs"]
            else "-"
        )
        print(
            f"| {name} | {run['format']} | {run['pages']} | {run['bytes'] / run['pages'] / 1e3:.1f} | "
            f"{run['files'] / run['pages']:.2f} | {run['pages'] / run['seconds']:.0f} | {thumbs} |"
        )
    if args.index_features and Path(args.chromium).exists():
        timing = time_index_in_chromium(args.index_features, args.chromium)
        print(
            f"\nindex of {args.index_features} features in headless Chromium: load {timing['load_s']:.2f} s, "
            f"sort {timing['sort_s']:.2f} s, search {timing['search_s']:.2f} s"
        )


if __name__ == "__main__":
    main()
