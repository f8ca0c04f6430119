"""Frozen config dataclasses: JSON round-trip, argparse derivation, choice checks and resume identity.

Each stage describes its options in one frozen dataclass; the CLI and the JSON written beside every
artifact are both derived from it, so the two cannot drift apart. A field's `metadata` says how it shows on
the command line and whether it belongs to what a run produces:

- `"help"`: the `--help` text;
- `"run_only": True`: the field only says how to run (an output folder, a device, a progress bar), so it is
  left out of the recorded identity of a run (`content_fields`) and a rerun may change it and still resume;
- `"required": True`: the command line needs it although Python callers may leave it at its default (an
  input path that a Python caller passes as an object instead);
- `"positional": True`: the command line takes it as a positional argument.

Every config calls `check_choices(self)` in `__post_init__`, so a `Literal` field refuses an unknown value
from Python as it does on the command line. Booleans become `--x/--no-x` flags; a bool field already named
as a negation (`no_images`, default False) is the one flag `--no-images`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from vitsae.errors import InvalidValue
from vitsae.fileio import read_json, write_json_atomic

C = TypeVar("C")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _literal_choices(tp: Any) -> tuple[Any, ...] | None:
    """The values of a `Literal[...]` (or `Literal[...] | None`) annotation, else None."""
    if typing.get_origin(tp) is typing.Literal:
        return typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if typing.get_origin(arg) is typing.Literal:
                return typing.get_args(arg)
    return None


def check_choices(cfg: Any) -> None:
    """Refuse a `Literal` field whose value is not one of its choices, naming the valid ones."""
    cls = type(cfg)
    for f in dataclasses.fields(cls):
        choices = _literal_choices(_hints(cls)[f.name])
        value = getattr(cfg, f.name)
        if choices is not None and value is not None and value not in choices:
            raise InvalidValue(f"unknown {f.name} {value!r}; valid: {list(choices)}")


def run_only_fields(cls: type) -> tuple[str, ...]:
    """Names of the fields marked `"run_only"`: how to run, not what is produced."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("run_only"))


def content_fields(cfg: Any) -> dict[str, Any]:
    """The JSON form of the fields of `cfg` that define what a run produces (all but the run-only ones)."""
    skip = set(run_only_fields(type(cfg)))
    return {k: v for k, v in config_to_dict(cfg).items() if k not in skip}


def _json_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return dataclasses.MISSING
    return json.loads(json.dumps(value, default=str))


_HASH = re.compile(r"[0-9a-f]{40,}")


def _show(value: Any) -> str:
    """repr of a value, with long hex digests cut to 12 characters."""
    if isinstance(value, str) and _HASH.fullmatch(value):
        return repr(value[:12] + "…")
    return repr(value)


def describe_differences(saved: Mapping[str, Any], wanted: Any, holder: str = "saved") -> list[str]:
    """One line per differing field, `"<field>: <holder> has A, requested B"` (nested dicts: `a.b`).

    `wanted` is a config (its `content_fields` are compared, and a field that `saved` lacks counts as its
    default, so JSON written before the field existed still matches) or a plain dict.
    """
    defaults: dict[str, Any] = {}
    if dataclasses.is_dataclass(wanted) and not isinstance(wanted, type):
        defaults = {f.name: _json_default(f) for f in dataclasses.fields(wanted)}
        defaults = {k: v for k, v in defaults.items() if v is not dataclasses.MISSING}
        wanted = content_fields(wanted)
    return _differences(dict(saved), dict(wanted), holder, "", defaults)


def _differences(
    saved: dict[str, Any], wanted: dict[str, Any], holder: str, prefix: str, defaults: dict[str, Any]
) -> list[str]:
    lines = []
    for key in sorted(wanted):
        old = saved.get(key, defaults.get(key))
        new = wanted[key]
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            lines += _differences(old, new, holder, f"{prefix}{key}.", {})
        else:
            lines.append(f"{prefix}{key}: {holder} has {_show(old)}, requested {_show(new)}")
    return lines


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
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise InvalidValue(f"unknown {cls.__name__} fields {sorted(unknown)}; known: {sorted(names)}")
    return cls(**{k: _coerce(hints[k], v) for k, v in data.items()})


def save_config(cfg: Any, path: str | Path) -> None:
    write_json_atomic(path, config_to_dict(cfg))


def load_config(cls: type[C], path: str | Path) -> C:
    return config_from_dict(cls, read_json(path))


def _scalar_parser(tp: Any) -> Any:
    if tp in (int, float, str, Path):
        return tp
    return str


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one `--field-name` option per field of `cls` (defaults and help from the dataclass).

    A bool field becomes `--field-name/--no-field-name`; a tuple or list field takes several values; a
    `Literal` field takes one of its choices.
    """
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = hints[f.name]
        origin = typing.get_origin(tp)
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if origin in (typing.Union, types.UnionType) and len(args) == 1:
            tp, origin, args = args[0], typing.get_origin(args[0]), list(typing.get_args(args[0]))
        kwargs: dict[str, Any] = {"help": f.metadata.get("help", "")}
        default = _json_default(f)
        if default is dataclasses.MISSING or f.metadata.get("required"):
            if not f.metadata.get("positional"):
                kwargs["required"] = True
        else:
            kwargs["default"] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if tp is bool and f.name.startswith("no_"):
            kwargs["action"] = "store_true"  # already the negative form: `--no-x`, never `--no-no-x`
        elif tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin in (tuple, list):
            kwargs["nargs"] = "+"
            kwargs["type"] = _scalar_parser(args[0])
        elif origin is typing.Literal:
            kwargs["choices"] = list(typing.get_args(tp))
        else:
            kwargs["type"] = _scalar_parser(tp)
        flag = f.name.replace("_", "-")
        if tp is bool and "default" in kwargs and not f.name.startswith("no_"):
            shown = f"--{flag}" if kwargs["default"] else f"--no-{flag}"
            kwargs["help"] = f"{kwargs['help']} (default: {shown})".strip()
        elif kwargs.get("default") not in (None, ""):
            kwargs["help"] = f"{kwargs['help']} (default: {kwargs['default']})".strip()
        if f.metadata.get("positional"):
            if "default" in kwargs:
                kwargs["nargs"] = "?"
            parser.add_argument(f.name, metavar=f.name.upper(), **kwargs)
        else:
            parser.add_argument(f"--{flag}", dest=f.name, **kwargs)


def config_from_args(cls: type[C], ns: argparse.Namespace, **overrides: Any) -> C:
    """Build `cls` from parsed arguments made by `add_config_arguments`."""
    hints = _hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif hasattr(ns, f.name):
            values[f.name] = _coerce(hints[f.name], getattr(ns, f.name))
    return cls(**values)
