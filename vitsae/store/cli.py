"""`vitsae harvest`: the options of HarvestConfig as command-line flags.

Rerunning the same command resumes an interrupted harvest; under `torchrun` every rank harvests its
own block of shards and rank 0 writes the manifests.
"""

from __future__ import annotations

import argparse

from vitsae.config import add_config_arguments, config_from_args
from vitsae.data.loader import check_has_images
from vitsae.data.open import open_source
from vitsae.fileio import check_output_folder
from vitsae.store.config import HarvestConfig
from vitsae.store.harvest import harvest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, HarvestConfig)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(HarvestConfig, args)
    source = open_source(config.source)
    check_has_images(source, spec=config.source)  # before the output folder is made
    check_output_folder(config.out)
    stores = harvest(config, source=source)
    for hook, directory in stores.items():
        print(f"{hook}: {directory}")
    return 0
