"""Checks of a store's shards against its manifest: each present, of the recorded size and sha256.

The reader runs them (sizes when a store is opened, a shard's sha256 the first time the process reads
it); `vitsae verify` runs all of them at once. Each problem is one line that names the shard and says how
to repair it: rerunning the harvest recomputes every shard that fails a check and rewrites the manifest.

Besides the whole file's sha256, a harvest records the sha256 of every block of `block_rows` consecutive
activation rows (`BLOCK_BYTES` of them), so the training feed, which reads the store in shuffled chunks,
checks exactly the bytes it reads as it reads them instead of hashing whole shards first.
"""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from vitsae.fileio import sha256_file
from vitsae.store.format import DTYPES, RERUN_HARVEST, StoreError, read_manifest, read_shard_header

BLOCK_BYTES = 4 << 20  # activation bytes per checksummed block (whole rows: rows of at most this many bytes)


def size_problem(path: Path, nbytes: int) -> str | None:
    """What is wrong with the shard's presence or size, or None."""
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        return f"shard {path} is missing; {RERUN_HARVEST}"
    if actual != nbytes:
        return (
            f"shard {path} is {actual} bytes, the manifest says {nbytes}: truncated or replaced; "
            f"{RERUN_HARVEST}"
        )
    return None


def sha256_problem(path: Path, expected: str, data: bytes | memoryview | None = None) -> str | None:
    """What is wrong with the shard's sha256 (of `data`, its bytes already read, else of the file)."""
    digest = sha256_file(path) if data is None else hashlib.sha256(data).hexdigest()
    return None if digest == expected else _mismatch(path, "", digest, expected)


def _mismatch(path: Path, where: str, digest: str, expected: str) -> str:
    return (
        f"shard {path} fails its sha256 check{where} (got {digest[:16]}…, the manifest says "
        f"{str(expected)[:16]}…): the shard or the manifest was modified; {RERUN_HARVEST}"
    )


def block_rows_for(row_bytes: int) -> int:
    """Rows per checksummed block for rows of `row_bytes` bytes."""
    return max(1, BLOCK_BYTES // row_bytes)


def block_hashes(acts_bytes: memoryview, block_bytes: int) -> list[str]:
    """The sha256 of each `block_bytes` piece of a shard's activation bytes (the last may be shorter)."""
    return [
        hashlib.sha256(acts_bytes[i : i + block_bytes]).hexdigest()
        for i in range(0, len(acts_bytes), block_bytes)
    ]


def block_problem(
    path: Path, block: int, rows: tuple[int, int], expected: str, data: memoryview
) -> str | None:
    """What is wrong with one block (activation rows `rows` of the shard) whose bytes are `data`."""
    digest = hashlib.sha256(data).hexdigest()
    if digest == expected:
        return None
    return _mismatch(path, f" in activation rows {rows[0]}-{rows[1] - 1} (block {block})", digest, expected)


def shard_problem(path: Path, entry: dict, row_bytes: int) -> str | None:
    """What is wrong with one shard, from one sequential read: its presence or size, else the first of
    its recorded blocks that fails its sha256, else the whole file's sha256; None if nothing."""
    problem = size_problem(path, int(entry["bytes"]))
    if problem:
        return problem
    blocks = entry.get("block_sha256") or []
    try:
        offset = read_shard_header(path)["activations"].offset if blocks else 0
    except (StoreError, KeyError):  # a damaged header: the whole file's sha256 names the shard
        blocks, offset = [], 0
    block_rows = int(entry.get("block_rows", 0))
    whole, problem = hashlib.sha256(), None
    with open(path, "rb", buffering=0) as fh:
        whole.update(_read(fh, offset))
        for block, expected in enumerate(blocks):
            piece = _read(fh, block_rows * row_bytes)
            whole.update(piece)
            rows = (block * block_rows, block * block_rows + len(piece) // row_bytes)
            problem = problem or block_problem(path, block, rows, expected, memoryview(piece))
        while piece := fh.read(BLOCK_BYTES):
            whole.update(piece)
    if problem is None and whole.hexdigest() != entry["sha256"]:
        problem = _mismatch(path, "", whole.hexdigest(), entry["sha256"])
    return problem


def _read(fh: io.RawIOBase, nbytes: int) -> bytes:
    """Up to `nbytes` bytes (fewer only at the end of the file)."""
    parts, left = [], nbytes
    while left > 0 and (piece := fh.read(left)):
        parts.append(piece)
        left -= len(piece)
    return b"".join(parts)


def store_problems(store_dir: Path, progress: bool = False) -> tuple[list[str], int]:
    """Every problem of every shard of the store at `store_dir` (shards checked by a few threads at
    once), and the number of shards checked."""
    manifest = read_manifest(store_dir)
    shards = manifest["shards"]
    row_bytes = int(manifest["width"]) * DTYPES[manifest["dtype"]][2]
    total = sum(int(entry["bytes"]) for entry in shards)

    def check(entry: dict) -> tuple[str | None, int]:
        return shard_problem(store_dir / entry["file"], entry, row_bytes), int(entry["bytes"])

    problems = []
    with (
        tqdm(total=total, unit="B", unit_scale=True, desc=store_dir.name, disable=not progress) as bar,
        ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool,
    ):
        for problem, nbytes in pool.map(check, shards):  # in shard order
            if problem:
                problems.append(problem)
            bar.update(nbytes)
    return problems, len(shards)
