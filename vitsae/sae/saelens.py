"""SAELens' on-disk format, `cfg.json` + `sae_weights.safetensors`: export, and reading it back.

Matches the SAELens 6.x inference layout (`SAE.load_from_disk`): weights W_enc [d_in, d_sae], b_enc,
W_dec [d_sae, d_in], b_dec and, for JumpReLU, `threshold`; cfg fields d_in, d_sae, dtype, device,
apply_b_dec_to_input, normalize_activations, reshape_activations, architecture, `metadata` and, for
TopK, `k`. BatchTopK is written as a JumpReLU SAE with its learned global threshold, as SAELens does.
A recorded `norm_scale` is folded into the weights so the export takes raw activations.

`load_saelens(dir)` reads that layout (standard, TopK and JumpReLU SAEs, also SAELens' own files with
`apply_b_dec_to_input` false: the decoder bias is folded into b_enc) into a `SparseAutoencoder` on raw
activations; `load_sae` calls it for a folder holding `cfg.json` and no `sae.json`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vitsae.errors import InvalidValue
from vitsae.fileio import damaged, load_safetensors, read_json, save_tensors_atomic, write_json_atomic
from vitsae.sae.config import SAEConfig
from vitsae.sae.model import SparseAutoencoder

SAELENS_VERSION = "6.12"
SAELENS_ARCHITECTURE = {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu", "jumprelu": "jumprelu"}
SAELENS_CONFIG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
FROM_SAELENS = {"standard": "relu", "relu": "relu", "topk": "topk", "jumprelu": "jumprelu"}
REEXPORT = "export it again (`vitsae export --format saelens`) or save it again with SAELens"


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
    save_tensors_atomic(directory / SAELENS_WEIGHTS, weights)
    write_json_atomic(directory / SAELENS_CONFIG, saelens_cfg)
    return directory


def _saelens_config(directory: Path, cfg: dict) -> SAEConfig:
    where = directory / SAELENS_CONFIG
    architecture = FROM_SAELENS.get(str(cfg.get("architecture", "standard")))
    if architecture is None:
        raise InvalidValue(
            f"{where}: SAELens architecture {cfg.get('architecture')!r} is not one vitsae reads "
            f"({', '.join(sorted(FROM_SAELENS))})"
        )
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise InvalidValue(
            f"{where}: normalize_activations={cfg['normalize_activations']!r}; vitsae reads SAELens SAEs "
            "that take raw activations ('none')"
        )
    if cfg.get("rescale_acts_by_decoder_norm") or cfg.get("reshape_activations", "none") != "none":
        raise InvalidValue(f"{where}: rescale_acts_by_decoder_norm / reshape_activations are not supported")
    try:
        d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    except (KeyError, TypeError, ValueError) as err:
        raise damaged(where, f"it lacks d_in or d_sae ({err!r})", REEXPORT) from err
    if d_in <= 0 or d_sae % d_in:
        raise InvalidValue(f"{where}: d_sae {d_sae} is not a multiple of d_in {d_in}; vitsae needs F = n * D")
    metadata = cfg.get("metadata") or {}
    return SAEConfig(
        d_in=d_in,
        expansion_factor=d_sae // d_in,
        architecture=architecture,
        k=int(cfg.get("k", 1)) if architecture == "topk" else 32,
        decoder_init_norm=1.0,
        b_dec_init="zeros",
        hook_name=str(metadata.get("hook_name") or cfg.get("hook_name") or ""),
        model_spec=str(metadata.get("model_name") or cfg.get("model_name") or ""),
        store=str(metadata.get("dataset_path") or ""),
    )


@torch.no_grad()
def load_saelens(directory: str | Path) -> SparseAutoencoder:
    """An SAE from an SAELens folder (`cfg.json` + `sae_weights.safetensors`), on raw activations."""
    directory = Path(directory)
    cfg = _saelens_config(directory, read_json(directory / SAELENS_CONFIG, REEXPORT, dict))
    weights = load_safetensors(directory / SAELENS_WEIGHTS, REEXPORT)
    needed = {"W_enc", "b_enc", "W_dec", "b_dec"} | (
        {"threshold"} if cfg.architecture == "jumprelu" else set()
    )
    shapes = {
        "W_enc": (cfg.d_in, cfg.d_sae),
        "b_enc": (cfg.d_sae,),
        "W_dec": (cfg.d_sae, cfg.d_in),
        "b_dec": (cfg.d_in,),
        "threshold": (cfg.d_sae,),
    }
    found = {name: tuple(weights[name].shape) for name in needed if name in weights}
    if found != {name: shapes[name] for name in needed}:
        raise damaged(
            directory / SAELENS_WEIGHTS, f"tensors {found} do not match cfg.json's {sorted(needed)}", REEXPORT
        )
    sae = SparseAutoencoder(cfg)
    W_enc = weights["W_enc"].float()
    b_enc = weights["b_enc"].float()
    if not read_json(directory / SAELENS_CONFIG).get("apply_b_dec_to_input", True):
        b_enc = b_enc + weights["b_dec"].float() @ W_enc  # W_enc x + b_enc = W_enc (x - b_dec) + b_enc'
    sae.W_enc.copy_(W_enc)
    sae.b_enc.copy_(b_enc)
    sae.W_dec.copy_(weights["W_dec"].float())
    sae.b_dec.copy_(weights["b_dec"].float())
    if cfg.architecture == "jumprelu":
        sae.log_threshold.copy_(weights["threshold"].float().clamp_min(1e-30).log())
    return sae.eval()
