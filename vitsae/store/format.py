"""The on-disk store format (docs/store-format.md): names, dtypes, shard files and the manifest.

A store is a directory holding `manifest.json` and shards `shard-NNNNNN.safetensors`, each with three
tensors: `activations` [rows, D], `image_index` int64 [rows] and `token_index` int32 [rows]. The
safetensors header is parsed here directly so the reader can memory-map the data with numpy.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save

from vitsae.errors import DamagedFile, VitsaeError
from vitsae.fileio import read_json

FORMAT_NAME = "vitsae-activation-store"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

# store dtype name -> (torch dtype, safetensors dtype code, bytes per element)
DTYPES: dict[str, tuple[torch.dtype, str, int]] = {
    "float16": (torch.float16, "F16", 2),
    "bfloat16": (torch.bfloat16, "BF16", 2),
    "float32": (torch.float32, "F32", 4),
}
# safetensors dtype code -> numpy dtype used to memory-map it (bfloat16 is read as raw uint16)
NUMPY_OF_CODE: dict[str, np.dtype] = {
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "F32": np.dtype("<f4"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
}


class StoreError(VitsaeError):
    """A store that cannot be used as asked: missing, corrupt, or made by a different configuration."""


RERUN_HARVEST = "rerun the harvest command that made the store (same options and --out) to recompute it"
REPAIR_SHARD = (
    "rerun the harvest command that made the store (same options and --out): it recomputes the shard"
)
REPAIR_MANIFEST = (
    "rerun the harvest command that made the store (same options and --out): it rewrites the manifest "
    "from the finished shards"
)


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.safetensors"


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies in a shard file: absolute byte offset, dtype code and shape."""

    offset: int
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * NUMPY_OF_CODE[self.dtype].itemsize


def read_shard_header(path: Path) -> dict[str, TensorEntry]:
    """Parse a safetensors header: an 8-byte little-endian length, then that many bytes of JSON."""
    try:
        with open(path, "rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise StoreError(
                    f"shard {path} is truncated: shorter than a safetensors header; {RERUN_HARVEST}"
                )
            (header_len,) = struct.unpack("<Q", prefix)
            size = os.fstat(fh.fileno()).st_size
            if header_len > size - 8:  # checked before reading: a damaged length could ask for exabytes
                raise StoreError(
                    f"shard {path} is damaged: its safetensors header claims {header_len} bytes but the file "
                    f"holds {size}; {REPAIR_SHARD}"
                )
            raw = fh.read(header_len)
    except FileNotFoundError as exc:
        raise StoreError(f"shard {path} is missing; {RERUN_HARVEST}") from exc
    try:
        header = json.loads(raw)
        data_start = 8 + header_len
        return {
            name: TensorEntry(
                data_start + int(info["data_offsets"][0]), str(info["dtype"]), tuple(map(int, info["shape"]))
            )
            for name, info in header.items()
            if name != "__metadata__"
        }
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        what = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else f"{type(exc).__name__}: {exc}"
        raise StoreError(
            f"shard {path} has a corrupt safetensors header ({what}), so it is damaged; {REPAIR_SHARD}"
        ) from exc


def shard_bytes(acts_RD: torch.Tensor, image_index_R: torch.Tensor, token_index_R: torch.Tensor) -> bytes:
    """One shard's safetensors bytes (deterministic: the same rows always give the same bytes)."""
    tensors = {
        "activations": acts_RD.contiguous(),
        "image_index": image_index_R.to(torch.int64).contiguous(),
        "token_index": token_index_R.to(torch.int32).contiguous(),
    }
    # one metadata key only: safetensors writes metadata from a hash map, so several keys have no fixed order
    return save(tensors, metadata={"format": f"{FORMAT_NAME}/{FORMAT_VERSION}"})


def read_manifest(store_dir: Path) -> dict[str, Any]:
    """Load and version-check a store's manifest."""
    path = Path(store_dir) / MANIFEST_NAME
    if not path.exists():
        raise StoreError(
            f"{store_dir} is not an activation store: {MANIFEST_NAME} is missing "
            "(an unfinished harvest? rerun the same `vitsae harvest` command to finish it)"
        )
    try:
        manifest = read_json(path, REPAIR_MANIFEST, dict)
    except DamagedFile as err:
        raise StoreError(str(err)) from err
    if manifest.get("format") != FORMAT_NAME:
        raise StoreError(
            f"{path} is not a {FORMAT_NAME} manifest (format={manifest.get('format')!r}); if the store was "
            f"made by vitsae it is damaged: {REPAIR_MANIFEST}"
        )
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise StoreError(
            f"{path} has format version {version}; this vitsae reads version {FORMAT_VERSION}"
            + ("; upgrade vitsae to read it" if newer else f"; {REPAIR_MANIFEST}")
        )
    problem = _manifest_problem(manifest)
    if problem:
        raise StoreError(f"{path} is damaged: {problem}; {REPAIR_MANIFEST}")
    return manifest


_SHARD_KEYS = {"file": str, "rows": int, "images": list, "bytes": int, "sha256": str}


def _manifest_problem(manifest: dict[str, Any]) -> str:
    """What is missing or mistyped among the entries a reader needs ("" when nothing)."""
    for key, kind in (
        ("hook", str),
        ("width", int),
        ("dtype", str),
        ("token_layout", dict),
        ("shards", list),
    ):
        if not isinstance(manifest.get(key), kind):
            return f"its {key!r} entry is missing or not a {kind.__name__}"
    if not isinstance((manifest.get("stats") or {}).get("mean_norm"), (int, float)):
        return "its 'stats.mean_norm' entry is missing"
    if not isinstance((manifest.get("counts") or {}).get("rows"), int):
        return "its 'counts.rows' entry is missing"
    for i, entry in enumerate(manifest["shards"]):
        if not isinstance(entry, dict) or any(
            not isinstance(entry.get(k), t) for k, t in _SHARD_KEYS.items()
        ):
            return f"its shard entry {i} lacks one of {sorted(_SHARD_KEYS)}"
    return ""
