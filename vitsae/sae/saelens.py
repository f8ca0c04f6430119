"""Export to SAELens' on-disk format: `cfg.json` + `sae_weights.safetensors`.

Matches the SAELens 6.x inference layout (`SAE.load_from_disk`): weights W_enc [d_in, d_sae], b_enc,
W_dec [d_sae, d_in], b_dec and, for JumpReLU, `threshold`; cfg fields d_in, d_sae, dtype, device,
apply_b_dec_to_input, normalize_activations, reshape_activations, architecture, `metadata` and, for
TopK, `k`. BatchTopK is written as a JumpReLU SAE with its learned global threshold, as SAELens does.
A recorded `norm_scale` is folded into the weights so the export takes raw activations.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vitsae.fileio import save_tensors_atomic, write_json_atomic
from vitsae.sae.model import SparseAutoencoder

SAELENS_VERSION = "6.12"
SAELENS_ARCHITECTURE = {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu", "jumprelu": "jumprelu"}


@torch.no_grad()
def export_saelens(sae: SparseAutoencoder, directory: str | Path, model_name: str = "") -> Path:
    """Write `sae` in SAELens format into `directory` and return it."""
    directory = Path(directory)
    cfg = sae.cfg
    scale = cfg.norm_scale if cfg.norm_scale is not None else 1.0
    weights = {
        "W_enc": sae.W_enc * scale,
        "b_enc": sae.b_enc.clone(),
        "W_dec": sae.W_dec / scale,
        "b_dec": sae.b_dec / scale,
    }
    if cfg.architecture == "jumprelu":
        weights["threshold"] = sae.jumprelu_threshold
    elif cfg.architecture == "batchtopk":
        weights["threshold"] = torch.full_like(sae.b_enc, float(sae.threshold))
    weights = {name: t.detach().float().cpu().contiguous() for name, t in weights.items()}
    architecture = SAELENS_ARCHITECTURE[cfg.architecture]
    saelens_cfg = {
        "architecture": architecture,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "model_name": model_name or cfg.model_spec,
            "hook_name": cfg.hook_name,
            "dataset_path": cfg.store,
            "sae_lens_version": SAELENS_VERSION,
            "sae_lens_training_version": SAELENS_VERSION,
        },
    }
    if architecture == "topk":
        saelens_cfg["k"] = cfg.k
        saelens_cfg["rescale_acts_by_decoder_norm"] = False
    save_tensors_atomic(directory / "sae_weights.safetensors", weights)
    write_json_atomic(directory / "cfg.json", saelens_cfg)
    return directory
