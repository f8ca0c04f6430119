"""Activation stores: harvesting a model's hook activations to sharded safetensors files, and reading
them back memory-mapped, in random access or as shuffled training batches (docs/store-format.md)."""

from vitsae.store.config import HarvestConfig
from vitsae.store.format import FORMAT_VERSION, StoreError
from vitsae.store.harvest import harvest
from vitsae.store.reader import ActivationStore

__all__ = ["FORMAT_VERSION", "ActivationStore", "HarvestConfig", "StoreError", "harvest"]
