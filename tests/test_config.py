"""Config dataclasses round-trip through JSON and argparse."""

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from vitsae.config import add_config_arguments, config_from_args, config_from_dict, load_config, save_config
from vitsae.fileio import atomic_path, sha256_file, write_json_atomic


@dataclass(frozen=True)
class Example:
    name: str
    sizes: tuple[int, ...] = (1, 2)
    rate: float = 0.5
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    out: Path | None = None
    note: str = field(default="x", metadata={"help": "a note"})


def test_json_round_trip(tmp_path: Path) -> None:
    cfg = Example(name="n", sizes=(3, 4, 5), out=Path("/tmp/o"), flag=True)
    save_config(cfg, tmp_path / "c.json")
    assert load_config(Example, tmp_path / "c.json") == cfg
    assert json.loads((tmp_path / "c.json").read_text())["sizes"] == [3, 4, 5]


def test_unknown_field_lists_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown Example fields \['bogus'\]; known: .*'rate'"):
        config_from_dict(Example, {"name": "n", "bogus": 1})


def test_argparse_derivation() -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Example)
    ns = parser.parse_args(["--name", "m", "--sizes", "7", "8", "--flag", "true", "--mode", "b"])
    cfg = config_from_args(Example, ns)
    assert cfg == Example(name="m", sizes=(7, 8), flag=True, mode="b")
    with pytest.raises(SystemExit):
        parser.parse_args(["--name", "m", "--mode", "c"])


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
    assert len(sha256_file(target)) == 64


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_write_honours_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "f.json", {"a": 1})
    finally:
        os.umask(previous)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o666 & ~umask
