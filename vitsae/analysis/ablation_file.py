"""The `ablation_effects.json` file of a statistics folder: written by `vitsae ablation`, read by the browser.

Kept apart from `ablation.py` (which runs the model) so that `report` can read it without importing a model.
Format `vitsae.ablation_effects`, version 1: see `ablation.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitsae.errors import InvalidValue
from vitsae.fileio import read_json, write_json_atomic

ABLATION_FILE = "ablation_effects.json"
FORMAT = "vitsae.ablation_effects"
FORMAT_VERSION = 1


def write_ablation_effects(stats_dir: str | Path, record: dict[str, Any]) -> Path:
    path = Path(stats_dir) / ABLATION_FILE
    write_json_atomic(path, {"format": FORMAT, "format_version": FORMAT_VERSION, **record})
    return path


def read_ablation_effects(stats_dir: str | Path) -> dict[str, Any] | None:
    """The file's contents, or None when the folder has none; another format or a newer version is refused."""
    path = Path(stats_dir) / ABLATION_FILE
    if not path.is_file():
        return None
    record = read_json(path)
    if record.get("format") != FORMAT or record.get("format_version", 0) > FORMAT_VERSION:
        raise InvalidValue(
            f"{path} is format {record.get('format')!r} version {record.get('format_version')!r}; "
            f"this vitsae reads {FORMAT} version {FORMAT_VERSION} (rerun `vitsae ablation`)"
        )
    return record
