"""Atomic training checkpoints in safetensors + JSON (no pickle).

Layout under `<out>/checkpoints/`:
    step_000001000/trainer.json          step, tokens, data position, normalisation, config, format version
    step_000001000/rng.safetensors       torch CPU (and CUDA) generator states
    step_000001000/<run>.safetensors     SAE weights ("sae.*"), Adam moments/steps ("adam.*"), counters
    step_000001000/<run>.json            the SAE config and per-run counters
    latest.json                          name of the newest complete checkpoint
A checkpoint is written to a temporary folder and renamed into place before `latest.json` points to it,
so a run killed at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vitsae.errors import InvalidValue, MissingFile
from vitsae.fileio import read_json, write_json_atomic

FORMAT_VERSION = 2  # 2: per-run windows hold eval's ReconstructionStats sums, dead windows, controller


@dataclass
class RunCheckpoint:
    """One SAE's training state."""

    sae: torch.nn.Module
    optimizer: torch.optim.Adam
    counters_F: dict[str, torch.Tensor]
    extra: dict[str, Any]


def _optimizer_tensors(sae: torch.nn.Module, optimizer: torch.optim.Adam) -> dict[str, torch.Tensor]:
    tensors = {}
    for name, param in sae.named_parameters():
        for key, value in optimizer.state.get(param, {}).items():
            tensors[f"adam.{name}.{key}"] = value.detach().cpu().contiguous().reshape(value.shape)
    return tensors


def _load_optimizer_tensors(sae: torch.nn.Module, optimizer: torch.optim.Adam, tensors: dict) -> None:
    for name, param in sae.named_parameters():
        state = {
            key.rsplit(".", 1)[1]: value.to(param.device) if value.dim() else value
            for key, value in tensors.items()
            if key.startswith(f"adam.{name}.") and key.count(".") == name.count(".") + 2
        }
        if state:
            optimizer.state[param] = state


def checkpoint_root(out_dir: Path) -> Path:
    return Path(out_dir) / "checkpoints"


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    pointer = checkpoint_root(out_dir) / "latest.json"
    if not pointer.exists():
        return None
    path = checkpoint_root(out_dir) / read_json(pointer)["name"]
    if not (path / "trainer.json").exists():
        raise MissingFile(f"{pointer} names {path}, which is missing or incomplete")
    return path


def save_checkpoint(out_dir: Path, trainer_state: dict[str, Any], runs: dict[str, RunCheckpoint], keep: int):
    """Write a checkpoint of `trainer_state` and every run; prune to the `keep` newest. Returns its path."""
    root = checkpoint_root(out_dir)
    name = f"step_{trainer_state['step']:09d}"
    final = root / name
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".step_*.tmp-*"):  # left by a process killed mid-write (one writer per run)
        shutil.rmtree(stale)
    tmp = root / f".{name}.tmp-{os.getpid()}"
    tmp.mkdir()
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, str(tmp / "rng.safetensors"))
    for run_name, run in runs.items():
        tensors = {f"sae.{k}": v.detach().cpu().contiguous() for k, v in run.sae.state_dict().items()}
        tensors.update(_optimizer_tensors(run.sae, run.optimizer))
        tensors.update({f"counter.{k}": v.detach().cpu().contiguous() for k, v in run.counters_F.items()})
        save_file(tensors, str(tmp / f"{run_name}.safetensors"))
        write_json_atomic(tmp / f"{run_name}.json", run.extra)
    write_json_atomic(tmp / "trainer.json", {"format_version": FORMAT_VERSION, **trainer_state})
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_json_atomic(root / "latest.json", {"name": name, "step": trainer_state["step"]})
    old = sorted(p for p in root.glob("step_*") if p.is_dir() and p != final)
    for path in old[: max(len(old) - (keep - 1), 0)]:
        shutil.rmtree(path)
    return final


def read_trainer_state(path: Path) -> dict[str, Any]:
    state = read_json(path / "trainer.json")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise InvalidValue(f"{path}: checkpoint format {state['format_version']} is newer than vitsae reads")
    return state


def load_run(path: Path, run_name: str, run: RunCheckpoint) -> None:
    """Fill `run` (already built with the right shapes) from checkpoint folder `path`."""
    tensors = load_file(str(path / f"{run_name}.safetensors"))
    sae_state = {k[4:]: v for k, v in tensors.items() if k.startswith("sae.")}
    run.sae.load_state_dict(sae_state)
    _load_optimizer_tensors(run.sae, run.optimizer, tensors)
    for key in run.counters_F:
        run.counters_F[key].copy_(tensors[f"counter.{key}"])
    run.extra.update(read_json(path / f"{run_name}.json"))


def restore_rng(path: Path) -> None:
    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
