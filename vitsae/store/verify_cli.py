"""`vitsae verify STORE`: check every shard of a store (or of every store of a harvest folder) against its
manifest: present, of the recorded size and sha256. Exit 0 when all pass, 1 when any fails (one line per
damaged shard, saying how to repair it), 2 when STORE is not a store."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from vitsae.config import add_config_arguments, config_from_args
from vitsae.store.format import MANIFEST_NAME, RERUN_HARVEST
from vitsae.store.harvest import RUN_RECORD
from vitsae.store.verify import store_problems


@dataclass(frozen=True)
class VerifyConfig:
    """What `vitsae verify` checks."""

    store: Path = field(
        metadata={"help": "a store folder, or a harvest --out folder (every store in it)", "positional": True}
    )
    progress: bool = field(default=True, metadata={"help": "show a progress bar", "run_only": True})


def stores_in(folder: Path) -> list[Path]:
    """The store `folder` is, or the stores of the harvest folder it is (a missing manifest is named by
    the check itself)."""
    if (folder / RUN_RECORD).exists() and not (folder / MANIFEST_NAME).exists():
        found = sorted(p.parent for p in folder.glob(f"*/{MANIFEST_NAME}"))
        if found:
            return found
    return [folder]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, VerifyConfig)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(VerifyConfig, args)
    damaged = 0
    for store in stores_in(config.store):
        problems, shards = store_problems(store, config.progress)
        for problem in problems:
            print(problem)
        damaged += len(problems)
        if not problems:
            print(f"ok: {store}: all {shards} shards have their recorded size and sha256")
    if damaged:
        print(f"{damaged} damaged shard(s); {RERUN_HARVEST}")
        return 1
    return 0
