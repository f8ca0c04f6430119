"""Atomic file writes, JSON helpers, checksums and the pickle refusal shared by every stage.

Every artifact vitsae writes goes through a temporary name and a rename, so an interrupted
process never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitsae.errors import DamagedFile, InvalidValue, MissingFile

if TYPE_CHECKING:
    from torch import nn

# Suffixes of pickle-based weight files, which can run arbitrary code when loaded: vitsae refuses them.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The file gets the permissions the umask allows (as `open` would give it), not mkstemp's 0600, so
    stores and checkpoints stay readable by the rest of a group.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    while True:
        tmp_path = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of `path` that a killed writer left (`.<name>.<pid>-<hex>.tmp` whose process
    is gone, and the pid-less `.<name>.<hex>.tmp` of older versions); returns them.

    `atomic_path` calls it before each write, so a rerun after a kill leaves no temporary behind.
    """
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        owner, sep, _ = tmp.name[len(path.name) + 2 : -len(".tmp")].partition("-")
        if sep and owner.isdigit() and _process_alive(int(owner)):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_tensors_atomic(
    path: str | os.PathLike, tensors: dict[str, Any], metadata: dict[str, str] | None = None
) -> None:
    """Write a dict of tensors (and optional string metadata) as one safetensors file, atomically (CPU,
    contiguous copies)."""
    from safetensors.torch import save_file  # here: importing torch would slow every `vitsae` command

    cpu = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(cpu, str(tmp), metadata=metadata)


def read_json(path: str | os.PathLike, repair: str = "", kind: type | None = None) -> Any:
    """The JSON in `path`; content that is not JSON (or not a `kind`, e.g. dict) is a `DamagedFile`
    naming the file and, with `repair`, how to make it again."""
    try:
        with open(path, "rb") as fh:
            value = json.loads(fh.read().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise damaged(path, f"not UTF-8 text (byte {err.start})", repair) from err
    except json.JSONDecodeError as err:
        raise damaged(path, f"not valid JSON ({err})", repair) from err
    if kind is not None and not isinstance(value, kind):
        raise damaged(path, f"holds a JSON {type(value).__name__}, not a {kind.__name__}", repair)
    return value


def check_format(
    path: str | os.PathLike,
    info: Any,
    name: str,
    version: int | str,
    error: type[Exception] = InvalidValue,
    fix: str = "",
) -> dict[str, Any]:
    """`info` (a versioned file's header: its JSON object or safetensors metadata) when it says format `name`
    version `version`; else an `error` naming what was found, what this vitsae reads and, with `fix`, how
    to make the file again."""
    found = (info.get("format"), info.get("format_version")) if isinstance(info, dict) else (None, None)
    if found != (name, version):
        raise error(
            f"{path} is format {found[0]!r} version {found[1]!r}, not {name} version {version} (the one this "
            "vitsae reads)" + (f": {fix}" if fix else "")
        )
    return info


def load_versioned_tensors(
    path: str | os.PathLike, name: str, version: int, names: list[str], repair: str
) -> dict[str, Any]:
    """The tensors `names` of the safetensors file `path`, whose metadata must say format `name` version
    `version`; an unreadable file is a `DamagedFile`, another format or a missing tensor an `InvalidValue`,
    each saying how to make the file again (`repair`)."""
    from safetensors import SafetensorError, safe_open

    try:
        opened = safe_open(str(path), framework="pt")
    except (SafetensorError, ValueError, OSError) as err:
        raise damaged(path, f"not a readable safetensors file ({err})", repair) from err
    with opened as file:
        check_format(path, file.metadata() or {}, name, str(version), fix=repair)
        missing = sorted(set(names) - set(file.keys()))
        if missing:
            raise InvalidValue(f"{path} lacks tensors {missing}: {repair}")
        return {tensor: file.get_tensor(tensor) for tensor in names}


def damaged(path: str | os.PathLike, what: str, repair: str = "") -> DamagedFile:
    """The one wording of a damaged file: `<path> is damaged: <what>; <repair>`."""
    return DamagedFile(f"{path} is damaged: {what}" + (f"; {repair}" if repair else ""))


def load_safetensors(path: str | os.PathLike, repair: str = "") -> dict[str, Any]:
    """Every tensor of a safetensors file (CPU); an unreadable header or data is a `DamagedFile`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise MissingFile(f"{path} is missing" + (f"; {repair}" if repair else ""))
    try:
        return load_file(str(path))
    except (SafetensorError, ValueError, OverflowError, MemoryError) as err:
        raise damaged(path, f"not a readable safetensors file ({err})", repair) from err


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def check_output_folder(path: str | os.PathLike) -> Path:
    """Make the output folder `path` (with its parents) and prove it writable, before any work is done.

    A file in its place, or a folder vitsae may not write (read-only disk, permissions), is one
    `InvalidValue` naming the path, instead of a failure at the first checkpoint.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InvalidValue(f"the output folder {path} is a file; choose another output folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test.{secrets.token_hex(4)}.tmp"
        probe.touch()
        probe.unlink()
    except OSError as err:
        where = err.filename or path
        raise InvalidValue(
            f"cannot write the output folder {path}: {err.strerror or err} ({where}); "
            "choose a writable folder"
        ) from err
    return path


def weights_hash(module: nn.Module, config: dict[str, Any]) -> str:
    """sha256 over the JSON config and every state-dict tensor (name, dtype, shape, bytes), in name order.

    A stable fingerprint of a model or an SAE (a store's manifest records the model's; a statistics
    checkpoint the SAE's).
    """
    import torch  # here: importing torch would slow every `vitsae` command

    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    state = module.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
