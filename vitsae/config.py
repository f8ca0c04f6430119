"""Frozen config dataclasses: JSON round-trip and argparse derivation.

Each stage describes its options in one frozen dataclass; the CLI and the JSON written beside every
artifact are both derived from it, so the two cannot drift apart. Field help comes from
`field(metadata={"help": ...})`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from vitsae.fileio import read_json, write_json_atomic

C = TypeVar("C")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists, paths strings)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def _coerce(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value) if len(inner) == 1 else value
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v) for v in value)
        return tuple(_coerce(a, v) for a, v in zip(args, value, strict=True))
    if origin is list:
        return [_coerce(args[0], v) for v in value]
    if dataclasses.is_dataclass(tp):
        return config_from_dict(tp, value)
    if tp is Path:
        return Path(value)
    return value


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build `cls` from a dict; unknown keys are an error that lists the known ones."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}; known: {sorted(names)}")
    return cls(**{k: _coerce(hints[k], v) for k, v in data.items()})


def save_config(cfg: Any, path: str | Path) -> None:
    write_json_atomic(path, config_to_dict(cfg))


def load_config(cls: type[C], path: str | Path) -> C:
    return config_from_dict(cls, read_json(path))


def _scalar_parser(tp: Any) -> Any:
    if tp is bool:
        return _parse_bool
    if tp in (int, float, str, Path):
        return tp
    return str


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one `--field-name` option per field of `cls` (defaults from the dataclass)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = hints[f.name]
        origin = typing.get_origin(tp)
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if origin in (typing.Union, types.UnionType) and len(args) == 1:
            tp, origin, args = args[0], typing.get_origin(args[0]), list(typing.get_args(args[0]))
        kwargs: dict[str, Any] = {"help": f.metadata.get("help", "")}
        if f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            kwargs["default"] = f.default_factory()
        else:
            kwargs["required"] = True
        if origin in (tuple, list):
            kwargs["nargs"] = "+"
            kwargs["type"] = _scalar_parser(args[0])
        elif origin is typing.Literal:
            kwargs["choices"] = list(typing.get_args(tp))
        else:
            kwargs["type"] = _scalar_parser(tp)
        if "default" in kwargs and kwargs["help"] is not None:
            kwargs["help"] = f"{kwargs['help']} (default: {kwargs['default']})".strip()
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **kwargs)


def config_from_args(cls: type[C], ns: argparse.Namespace, **overrides: Any) -> C:
    """Build `cls` from parsed arguments made by `add_config_arguments`."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif hasattr(ns, f.name):
            values[f.name] = _coerce(hints[f.name], getattr(ns, f.name))
    return cls(**values)
