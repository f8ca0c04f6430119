"""Config dataclasses round-trip through JSON and argparse."""

import argparse
import dataclasses
import importlib
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from vitsae.config import (
    add_config_arguments,
    check_choices,
    config_from_args,
    config_from_dict,
    content_fields,
    describe_differences,
    load_config,
    run_only_fields,
    save_config,
)
from vitsae.errors import InvalidValue
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
    ns = parser.parse_args(["--name", "m", "--sizes", "7", "8", "--flag", "--mode", "b"])
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


@pytest.mark.parametrize(
    ("build", "field_name"),
    [
        (lambda: _cls("vitsae.sae.config", "SAEConfig")(d_in=4, b_dec_init="median"), "b_dec_init"),
        (lambda: _cls("vitsae.models.config", "HookedViTConfig")(8, 1, 2, 16, pool="max"), "pool"),
        (lambda: _cls("vitsae.train.config", "TrainConfig")(normalize="l2"), "normalize"),
        (lambda: _cls("vitsae.train.config", "TrainConfig")(lr_decay="step"), "lr_decay"),
        (lambda: _cls("vitsae.train.config", "TrainConfig")(dead_handling="revive"), "dead_handling"),
        (lambda: _cls("vitsae.data.preprocess", "Preprocess")(size=(8, 8), resample="lanczos"), "resample"),
        (lambda: _cls("vitsae.demo", "DemoConfig")(architecture="gated"), "architecture"),
        (
            lambda: _cls("vitsae.store.config", "HarvestConfig")("m", "s", ("h",), Path("o"), tokens="x"),
            "tokens",
        ),
    ],
)
def test_every_literal_is_checked_from_python(build, field_name) -> None:
    with pytest.raises(InvalidValue, match=rf"unknown {field_name} '\w+'; valid: \['"):
        build()


def _cls(module: str, name: str) -> type:
    return getattr(importlib.import_module(module), name)


def test_check_choices_walks_literal_and_optional_literal_fields() -> None:
    @dataclass(frozen=True)
    class Choices:
        mode: Literal["a", "b"] = "a"
        maybe: Literal["x", "y"] | None = None

        def __post_init__(self) -> None:
            check_choices(self)

    Choices(mode="b", maybe="y")
    with pytest.raises(InvalidValue, match=r"unknown maybe 'z'; valid: \['x', 'y'\]"):
        Choices(maybe="z")


@dataclass(frozen=True)
class Run:
    width: int = 4
    mode: str = "a"
    added_later: int = 7
    out: Path | None = field(default=None, metadata={"run_only": True})
    progress: bool = field(default=True, metadata={"run_only": True})


def test_content_fields_leave_out_run_only_ones() -> None:
    assert run_only_fields(Run) == ("out", "progress")
    assert content_fields(Run(out=Path("/o"))) == {"width": 4, "mode": "a", "added_later": 7}


def test_describe_differences_words_each_change_once() -> None:
    saved = {"width": 4, "mode": "b", "out": "/old", "progress": False}  # JSON written before added_later
    assert describe_differences(saved, Run(out=Path("/new"))) == ["mode: saved has 'b', requested 'a'"]
    assert describe_differences(saved, Run(added_later=8), "the store") == [
        "added_later: the store has 7, requested 8",
        "mode: the store has 'b', requested 'a'",
    ]
    nested = describe_differences(
        {"sae": {"hash": "a" * 64, "d": 2}}, {"sae": {"hash": "b" * 64, "d": 2}}, "it"
    )
    assert nested == ["sae.hash: it has 'aaaaaaaaaaaa…', requested 'bbbbbbbbbbbb…'"]


def test_run_inputs_stay_out_of_saved_configs_and_old_json_loads() -> None:
    from vitsae.analysis.stats import StatsConfig
    from vitsae.report.browser import BrowserConfig
    from vitsae.train.config import TrainConfig

    old_stats = {
        "k_images": 3,
        "k_patches": 16,
        "n_samples": 64,
        "hist_bins": 48,
        "hist_min": 0.001,
        "hist_max": 1000.0,
        "seed": 0,
    }  # feature_stats.json "config" as written before
    loaded = config_from_dict(StatsConfig, old_stats)
    assert loaded.k_images == 3 and loaded.store is None and loaded.progress
    saved = content_fields(StatsConfig(k_images=3, store=Path("s"), out=Path("o"), device="cuda", images=5))
    assert saved == {**old_stats, "co_slots": 8}  # co_slots (what the pass samples) came later
    assert "stats" not in content_fields(BrowserConfig(stats=Path("s")))
    old_train = {"architecture": "relu", "lr": [0.001], "progress": False, "plot": True}
    assert describe_differences(old_train, TrainConfig(lr=(1e-3,), out=Path("o"), store=Path("s"))) == []


def test_train_config_takes_its_sae_fields_from_sae_config() -> None:
    from vitsae.sae.config import SAEConfig
    from vitsae.train.config import SAE_FIELDS, TrainConfig, expand_sweep

    train_fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for sae_field in dataclasses.fields(SAEConfig):
        if sae_field.name in SAE_FIELDS:
            assert train_fields[sae_field.name].default == sae_field.default
            assert train_fields[sae_field.name].metadata["help"] == sae_field.metadata["help"]
    cfg = TrainConfig(architecture="topk", k=(2, 3), b_dec_init="mean", jumprelu_bandwidth=0.2)
    specs = expand_sweep(cfg, d_in=4)
    assert [s.sae.k for s in specs] == [2, 3]
    assert all(s.sae.b_dec_init == "mean" and s.sae.jumprelu_bandwidth == 0.2 for s in specs)


def test_the_harvest_dtype_choices_are_the_store_dtypes() -> None:
    from vitsae.store.config import HarvestConfig
    from vitsae.store.format import DTYPES

    dtype = next(f for f in dataclasses.fields(HarvestConfig) if f.name == "dtype")
    assert set(typing.get_args(typing.get_type_hints(HarvestConfig)[dtype.name])) == set(DTYPES)
