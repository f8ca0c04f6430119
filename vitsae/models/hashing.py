"""A stable fingerprint of a model's configuration and weights, recorded in the store's manifest."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn


def weights_hash(module: nn.Module, config: dict[str, Any]) -> str:
    """sha256 over the JSON config and every state-dict tensor (name, dtype, shape, bytes), in name order."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    state = module.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
