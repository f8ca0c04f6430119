"""Checks of a store's shards against its manifest: each present, of the recorded size and sha256.

The reader runs them (sizes when a store is opened, a shard's sha256 the first time the process reads
it); `vitsae verify` runs all of them at once. Each problem is one line that names the shard and says how
to repair it: rerunning the harvest recomputes every shard that fails a check and rewrites the manifest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tqdm.auto import tqdm

from vitsae.fileio import sha256_file
from vitsae.store.format import RERUN_HARVEST, read_manifest


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
    if digest != expected:
        return (
            f"shard {path} fails its sha256 check (got {digest[:16]}…, the manifest says "
            f"{str(expected)[:16]}…): the shard or the manifest was modified; {RERUN_HARVEST}"
        )
    return None


def store_problems(store_dir: Path, progress: bool = False) -> tuple[list[str], int]:
    """Every problem of every shard of the store at `store_dir`, and the number of shards checked."""
    manifest = read_manifest(store_dir)
    shards = manifest["shards"]
    total = sum(int(entry["bytes"]) for entry in shards)
    problems = []
    with tqdm(total=total, unit="B", unit_scale=True, desc=store_dir.name, disable=not progress) as bar:
        for entry in shards:
            path = store_dir / entry["file"]
            problem = size_problem(path, int(entry["bytes"])) or sha256_problem(path, entry["sha256"])
            if problem:
                problems.append(problem)
            bar.update(int(entry["bytes"]))
    return problems, len(shards)
