"""Sparse autoencoder architectures (ReLU-L1, TopK, BatchTopK, JumpReLU), their save/load and export."""

from vitsae.sae.config import ARCHITECTURES, SAEConfig
from vitsae.sae.io import load_sae, read_sae_metadata, save_sae
from vitsae.sae.model import SparseAutoencoder, TrainOutput
from vitsae.sae.saelens import export_saelens

__all__ = [
    "ARCHITECTURES",
    "SAEConfig",
    "SparseAutoencoder",
    "TrainOutput",
    "export_saelens",
    "load_sae",
    "read_sae_metadata",
    "save_sae",
]
