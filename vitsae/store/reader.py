"""ActivationStore: memory-mapped reading of a harvested store.

Shards are memory-mapped with numpy at the data offsets from their safetensors headers (read when a
shard is first used), so opening a store of hundreds of GB reads only its manifest and file sizes.
Rows come back as float32 torch tensors, optionally scaled so that E||x|| = sqrt(D).
"""

from __future__ import annotations

import bisect
import math
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from vitsae.config import config_from_dict
from vitsae.data.open import source_from_description
from vitsae.data.preprocess import Preprocess
from vitsae.data.sources import ImageSource
from vitsae.errors import InvalidValue, MissingKey
from vitsae.store.format import (
    DTYPES,
    NUMPY_OF_CODE,
    RERUN_HARVEST,
    StoreError,
    read_manifest,
    read_shard_header,
)
from vitsae.store.shuffle import RAW_DTYPES, BatchFeed, BatchOrder, RowSource, WindowPool, chunk_spans
from vitsae.store.verify import block_problem, sha256_problem, shard_problem, size_problem
from vitsae.tokens import TokenLayout, find_row, patch_to_token, token_to_patch

Verify = Literal["size", "lazy", "full"]
_INDEX_DTYPES = {"image_index": np.dtype("<i8"), "token_index": np.dtype("<i4")}


@dataclass
class _Shard:
    path: Path
    row_start: int
    rows: int
    image_range: tuple[int, int]
    nbytes: int
    sha256: str
    block_rows: int  # rows per checksummed block (0: the store records none)
    block_sha256: list[str]
    maps: dict[str, np.memmap] | None = None
    blocks_ok: set[int] = field(default_factory=set)  # blocks checked by this process


def _read_exact(path: Path, offset: int, out: np.ndarray) -> None:
    """Fill `out` with the bytes of `path` from `offset` (one sequential read)."""
    view = memoryview(out).cast("B")
    with open(path, "rb", buffering=0) as fh:
        fh.seek(offset)
        while view:
            got = fh.readinto(view)
            if not got:
                raise StoreError(f"shard {path} ended early; {RERUN_HARVEST}")
            view = view[got:]


class ActivationStore:
    """One hook's harvested activations: `len(store)` rows of width `store.d_model`."""

    def __init__(self, path: Path, manifest: dict[str, Any], normalize: bool, verify: Verify) -> None:
        self.path = path
        self.manifest = manifest
        self.hook: str = manifest["hook"]
        self.d_model: int = int(manifest["width"])
        self.dtype: str = manifest["dtype"]
        self.layout = TokenLayout.from_dict(manifest["token_layout"], manifest["width"])
        self.mean_norm: float = float(manifest["stats"]["mean_norm"])
        self.norm_scale: float = math.sqrt(self.d_model) / self.mean_norm if self.mean_norm > 0 else 1.0
        self.normalize = normalize
        self._verify_on_read = verify == "lazy"
        self._verified: set[int] = set()
        self._lock = threading.Lock()
        self._windows = WindowPool()
        self._shards: list[_Shard] = []
        self._source: ImageSource | None = None
        row = 0
        for entry in manifest["shards"]:
            self._shards.append(
                _Shard(
                    path / entry["file"],
                    row,
                    int(entry["rows"]),
                    tuple(entry["images"]),
                    int(entry["bytes"]),
                    entry["sha256"],
                    int(entry.get("block_rows", 0)),
                    list(entry.get("block_sha256", [])),
                )
            )
            row += int(entry["rows"])
        if row != manifest["counts"]["rows"]:
            raise StoreError(
                f"{path / 'manifest.json'}: shard rows sum to {row}, "
                f"counts.rows says {manifest['counts']['rows']}"
            )
        self._row_starts = [s.row_start for s in self._shards]
        self._image_starts = [s.image_range[0] for s in self._shards]
        for shard in self._shards:
            self._check_size(shard)
        if verify == "full":
            self.verify()

    @classmethod
    def open(
        cls, path: str | os.PathLike, *, normalize: bool = False, verify: Verify = "lazy"
    ) -> ActivationStore:
        """Open a store directory. Every shard's byte size is checked now; `verify`: 'lazy' also checks
        each shard's sha256 the first time this process reads it, 'full' checks every sha256 now, 'size'
        checks sizes only (for a store already verified, e.g. by `vitsae verify`)."""
        if verify not in ("size", "lazy", "full"):
            raise InvalidValue(f"unknown verify mode {verify!r}; valid: ['size', 'lazy', 'full']")
        path = Path(path)
        return cls(path, read_manifest(path), normalize, verify)

    def __len__(self) -> int:
        return int(self.manifest["counts"]["rows"])

    def __repr__(self) -> str:
        return (
            f"ActivationStore({str(self.path)!r}, hook={self.hook!r}, rows={len(self)}, "
            f"d_model={self.d_model})"
        )

    # ---- integrity -------------------------------------------------------------------------------
    def _check_size(self, shard: _Shard) -> None:
        problem = size_problem(shard.path, shard.nbytes)
        if problem:
            raise StoreError(problem)

    def _check_sha(self, index: int, data: bytes | None = None) -> None:
        problem = sha256_problem(self._shards[index].path, self._shards[index].sha256, data)
        if problem:
            raise StoreError(problem)
        self._verified.add(index)

    def verify(self) -> None:
        """Check every shard's size, sha256 and block checksums against the manifest; raise StoreError
        naming the first bad file."""
        for index, entry in enumerate(self.manifest["shards"]):
            problem = shard_problem(self._shards[index].path, entry, self.row_bytes)
            if problem:
                raise StoreError(problem)
            self._verified.add(index)

    # ---- raw access ------------------------------------------------------------------------------
    def _map(self, index: int) -> dict[str, np.memmap]:
        """The shard's memory maps, its whole-file sha256 checked first when checking on first read."""
        if self._verify_on_read and index not in self._verified:
            with self._lock:
                if index not in self._verified:
                    self._check_sha(index)
        return self._open(index)

    def _open(self, index: int) -> dict[str, np.memmap]:
        """The shard's memory maps (its header parsed on first use), without a checksum check."""
        shard = self._shards[index]
        if shard.maps is None:
            with self._lock:
                if shard.maps is None:
                    shard.maps = self._open_maps(shard)
        return shard.maps

    def _open_maps(self, shard: _Shard) -> dict[str, np.memmap]:
        entries = read_shard_header(shard.path)
        expected = {
            "activations": (shard.rows, self.d_model),
            "image_index": (shard.rows,),
            "token_index": (shard.rows,),
        }
        maps = {}
        for name, shape in expected.items():
            entry = entries.get(name)
            if entry is None or entry.shape != shape:
                found = None if entry is None else entry.shape
                raise StoreError(f"shard {shard.path}: tensor {name!r} has shape {found}, expected {shape}")
            if entry.offset + entry.nbytes > shard.nbytes:
                raise StoreError(f"shard {shard.path}: tensor {name!r} runs past the end of the file")
            if shard.rows == 0:
                maps[name] = np.zeros(shape, dtype=NUMPY_OF_CODE[entry.dtype])
            else:
                maps[name] = np.memmap(
                    shard.path, dtype=NUMPY_OF_CODE[entry.dtype], mode="r", offset=entry.offset, shape=shape
                )
        return maps

    def _locate_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row index out of range [0, {len(self)})")
        return np.searchsorted(np.asarray(self._row_starts), rows, side="right") - 1

    def _gather(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Rows of one tensor in the stored dtype, in the order asked, reading each shard in row order."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        shard_of = self._locate_rows(rows)
        sort = np.argsort(rows, kind="stable")
        tail = (self.d_model,) if name == "activations" else ()
        out = None
        for index in np.unique(shard_of):
            pick = sort[shard_of[sort] == index]
            data = self._map(int(index))[name][rows[pick] - self._shards[index].row_start]
            if out is None:
                out = np.empty((len(rows), *tail), dtype=data.dtype)
            out[pick] = data
        if out is None:
            dtype = NUMPY_OF_CODE[DTYPES[self.dtype][1]] if name == "activations" else _INDEX_DTYPES[name]
            out = np.empty((0, *tail), dtype=dtype)
        return out

    def read_span(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) in the stored dtype (bfloat16 as raw uint16), read sequentially."""
        parts = []
        while start < stop:
            index = bisect.bisect_right(self._row_starts, start) - 1
            shard = self._shards[index]
            hi = min(stop, shard.row_start + shard.rows)
            acts_RD = self._map(index)["activations"]
            parts.append(np.asarray(acts_RD[start - shard.row_start : hi - shard.row_start]))
            start = hi
        return np.concatenate(parts) if len(parts) != 1 else parts[0]

    def to_float(self, acts_RD: np.ndarray) -> torch.Tensor:
        """Stored-dtype rows -> float32 tensor, scaled by `norm_scale` when normalising."""
        if self.dtype == "float32":
            tensor = torch.from_numpy(np.array(acts_RD, dtype=np.float32))  # a copy: maps are read-only
        else:
            with warnings.catch_warnings():  # a read-only view of the map, converted (copied) at once
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                raw = torch.from_numpy(np.ascontiguousarray(acts_RD))
            if self.dtype == "bfloat16":
                raw = raw.view(torch.int16).view(torch.bfloat16)
            tensor = raw.to(torch.float32)
        return tensor.mul_(self.norm_scale) if self.normalize else tensor

    def denormalize(self, acts_BD: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation of rows returned by this store (identity when not normalising)."""
        return acts_BD / self.norm_scale if self.normalize else acts_BD

    def __getitem__(self, rows: int | slice | np.ndarray | list[int] | torch.Tensor) -> torch.Tensor:
        """float32 rows: `store[i]` -> [D]; `store[a:b]`, `store[[i, j]]` -> [n, D]."""
        if isinstance(rows, (int, np.integer)):
            index = int(rows) + len(self) if rows < 0 else int(rows)
            return self.to_float(self._gather("activations", np.array([index])))[0]
        if isinstance(rows, slice):
            start, stop, step = rows.indices(len(self))
            if step == 1:
                return self.to_float(self.read_span(start, max(start, stop)))
            rows = np.arange(start, stop, step)
        if isinstance(rows, torch.Tensor):
            rows = rows.cpu().numpy()
        return self.to_float(self._gather("activations", np.asarray(rows)))

    # ---- provenance ------------------------------------------------------------------------------
    def provenance(self, rows: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(image index int64, token index int32) of each row."""
        return self._gather("image_index", np.asarray(rows)), self._gather("token_index", np.asarray(rows))

    def locate(self, rows: np.ndarray | list[int]) -> dict[str, np.ndarray]:
        """Image index, token index and patch (row, col) of each row; patch -1 for CLS/register tokens."""
        image_index, token_index = self.provenance(rows)
        patch_row, patch_col = token_to_patch(self.layout, token_index)
        return {
            "image_index": image_index,
            "token_index": token_index,
            "patch_row": patch_row,
            "patch_col": patch_col,
        }

    def row_of(
        self, image_index: int, token_index: int | None = None, *, patch: tuple[int, int] | None = None
    ) -> int:
        """The row holding (image, token) or (image, patch (row, col)); KeyError if not stored."""
        if (token_index is None) == (patch is None):
            raise InvalidValue("give exactly one of token_index and patch=(row, col)")
        if patch is not None:
            token_index = int(patch_to_token(self.layout, patch[0], patch[1]))
        index = bisect.bisect_right(self._image_starts, image_index) - 1
        if index >= 0 and image_index < self._shards[index].image_range[1]:
            maps = self._map(index)
            hit = find_row(maps["image_index"], maps["token_index"], image_index, token_index)
            if hit is not None:
                return self._shards[index].row_start + hit
        raise MissingKey(
            f"(image {image_index}, token {token_index}) is not stored in {self.path} "
            "(skipped image, token not selected, or out of range)"
        )

    @property
    def preprocess(self) -> Preprocess:
        """The preprocessing recorded at harvest time (`resize_crop` gives the image the patches tile)."""
        return config_from_dict(Preprocess, self.manifest["preprocess"])

    def source(self) -> ImageSource:
        """The image source re-opened from the manifest's description (folder, HF dataset on disk, shapes)."""
        if self._source is None:
            self._source = source_from_description(self.manifest["source"])
        return self._source

    def image(self, row: int) -> Image.Image:
        """The source image (RGB, before preprocessing) that `row` was harvested from."""
        image_index, _ = self.provenance([row])
        return self.source()[int(image_index[0])].image

    # ---- training batches ------------------------------------------------------------------------
    @property
    def row_bytes(self) -> int:
        return self.d_model * DTYPES[self.dtype][2]

    def _shard_spans(self, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """(shard index, first row in the shard, rows) of each shard's part of rows [start, stop)."""
        while start < stop:
            index = bisect.bisect_right(self._row_starts, start) - 1
            shard = self._shards[index]
            hi = min(stop, shard.row_start + shard.rows)
            yield index, start - shard.row_start, hi - start
            start = hi

    def _data_offset(self, index: int) -> int:
        """Where the shard's activations begin in its file (a shard without block checksums is checked
        whole first when checking on first read)."""
        maps = self._open(index) if self._shards[index].block_rows else self._map(index)
        return maps["activations"].offset

    def read_rows_into(self, start: int, stop: int, out_RD: np.ndarray) -> None:
        """Rows [start, stop) as raw stored bits into `out_RD`, one sequential file read per shard. When
        checking on first read, a shard with block checksums has each block checked from the bytes read
        (the whole block is read where the rows cover only part of it), one without is hashed whole."""
        pos = 0
        for index, lo, rows in self._shard_spans(start, stop):
            shard, offset, out = self._shards[index], self._data_offset(index), out_RD[pos : pos + rows]
            if not self._verify_on_read or index in self._verified or not shard.block_rows:
                _read_exact(shard.path, offset + lo * self.row_bytes, out)
            else:
                self._read_checked(shard, offset, lo, lo + rows, out)
            pos += rows

    def _read_checked(self, shard: _Shard, data_offset: int, lo: int, hi: int, out_RD: np.ndarray) -> None:
        """Shard rows [lo, hi) into `out_RD`, checking each block they touch that is not checked yet."""
        size = shard.block_rows
        blocks = range(lo // size, -(-hi // size))
        todo = [b for b in blocks if b not in shard.blocks_ok]
        if not todo:
            _read_exact(shard.path, data_offset + lo * self.row_bytes, out_RD)
            return
        first, last = blocks[0] * size, min(shard.rows, blocks[-1] * size + size)
        whole = out_RD if (first, last) == (lo, hi) else np.empty((last - first, self.d_model), out_RD.dtype)
        _read_exact(shard.path, data_offset + first * self.row_bytes, whole)
        for block in todo:
            rows = (block * size, min(shard.rows, block * size + size))
            data = memoryview(whole[rows[0] - first : rows[1] - first]).cast("B")
            problem = block_problem(shard.path, block, rows, shard.block_sha256[block], data)
            if problem:
                raise StoreError(problem)
            shard.blocks_ok.add(block)
        if whole is not out_RD:
            out_RD[:] = whole[lo - first : hi - first]

    def advise_rows(self, start: int, stop: int) -> None:
        """Ask the kernel to start reading rows [start, stop) now (several reads in flight at once)."""
        if not hasattr(os, "posix_fadvise"):
            return
        for index, lo, rows in self._shard_spans(start, stop):
            offset = self._data_offset(index) + lo * self.row_bytes
            fd = os.open(self._shards[index].path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, offset, rows * self.row_bytes, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)

    def hold(
        self, device: torch.device | str = "cpu", *, pin: bool = False, progress: bool = False
    ) -> torch.Tensor:
        """Every row as raw stored bits (int16 for 16-bit dtypes) in one tensor on `device` (pinned host
        memory with `pin`), each shard read whole, once, and its sha256 checked from the same bytes."""
        device = torch.device(device)
        raw = RAW_DTYPES[DTYPES[self.dtype][0]]
        held_ND = torch.empty(len(self), self.d_model, dtype=raw, device=device, pin_memory=pin)
        shards = tqdm(self._shards, desc="load store", unit="shard", disable=not progress)
        for index, shard in enumerate(shards):
            if shard.rows == 0:
                continue
            data = shard.path.read_bytes()
            if self._verify_on_read and index not in self._verified:
                self._check_sha(index, data)
            offset = self._map(index)["activations"].offset
            rows_RD = np.frombuffer(data, np.dtype(f"<i{raw.itemsize}"), shard.rows * self.d_model, offset)
            with warnings.catch_warnings():  # read-only bytes, copied into the held tensor at once
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                rows_T = torch.from_numpy(rows_RD).view(shard.rows, self.d_model)
            held_ND[shard.row_start : shard.row_start + shard.rows].copy_(rows_T)
        return held_ND

    def batches(
        self,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        start: tuple[int, int] = (0, 0),
        epochs: int | None = None,
        drop_last: bool = False,
        chunk_rows: int = 2048,
        window_rows: int = 65536,
        prefetch: int = 4,
        device: torch.device | str = "cpu",
        keep_dtype: bool = False,
        held: torch.Tensor | None = None,
    ) -> BatchFeed:
        """Batches [batch_size, D], every row once per epoch, in an order fixed by (seed, epoch) and the
        chunk and window sizes (docs/store-format.md).

        Iterates epochs `start[0]`, … up to (not including) `epochs` (forever when None), starting at
        batch `start[1]`; the returned iterator's `.position` is what to save to resume. Batches are
        float32 (normalised when the store normalises), or with `keep_dtype` in the stored dtype, on
        `device`. `held`: the rows from `hold()`, served from memory in the same order.
        """
        if keep_dtype and self.normalize:
            raise InvalidValue("keep_dtype batches are not normalised: open the store with normalize=False")
        order = BatchOrder(
            chunk_spans([s.rows for s in self._shards], chunk_rows),
            seed,
            shuffle,
            max(1, window_rows // chunk_rows),
        )
        rows = RowSource(self.d_model, DTYPES[self.dtype][0], self.read_rows_into, held, self.advise_rows)
        return BatchFeed(
            order,
            rows,
            len(self),
            batch_size,
            start=start,
            epochs=epochs,
            drop_last=drop_last,
            device=device,
            out_dtype=None if keep_dtype else torch.float32,
            scale=self.norm_scale if self.normalize else None,
            prefetch=prefetch,
            pool=self._windows,
        )
