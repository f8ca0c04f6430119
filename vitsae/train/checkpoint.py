"""Atomic training checkpoints in safetensors + JSON (no pickle).

Layout under `<out>/checkpoints/`:
    step_000001000/trainer.json          step, tokens, data position, normalisation, config, format version
    step_000001000/rng.safetensors       torch CPU (and CUDA) generator states
    step_000001000/<run>.safetensors     SAE weights ("sae.*"), Adam moments/steps ("adam.*"), counters
    step_000001000/<run>.json            the SAE config and per-run counters
    latest.json                          name of the newest complete checkpoint
A checkpoint is written to a temporary folder and renamed into place before `latest.json` points to it,
so a run killed at any moment leaves the previous checkpoint intact. The last checkpoint of a run (at its
final step) also holds each run's last metric record, so a rerun killed during the final writes (weights,
`sae.json`, `sweep.json`) rewrites them, identical, with complete metrics.

Reruns (`resume_changes`, `finished_summaries`): the same options resume; a raised `total_tokens` trains
on from the newest checkpoint; a finished run folder is recognised and left as it is.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from vitsae.config import describe_differences
from vitsae.errors import DamagedFile, InvalidValue, MissingFile
from vitsae.fileio import damaged, load_safetensors, read_json, write_json_atomic

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


def _repair(path: Path) -> str:
    return f"delete {path} and rerun: training resumes from an older checkpoint or starts over"


def checkpoint_root(out_dir: Path) -> Path:
    return Path(out_dir) / "checkpoints"


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    pointer = checkpoint_root(out_dir) / "latest.json"
    if not pointer.exists():
        return None
    name = read_json(pointer, _repair(checkpoint_root(out_dir)), dict).get("name")
    if not isinstance(name, str):
        raise damaged(pointer, "it names no checkpoint", _repair(checkpoint_root(out_dir)))
    path = checkpoint_root(out_dir) / name
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
    state = read_json(path / "trainer.json", _repair(path), dict)
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise InvalidValue(
            f"{path}: checkpoint format {state['format_version']} is newer than vitsae reads; upgrade vitsae"
        )
    return state


def load_run(path: Path, run_name: str, run: RunCheckpoint) -> None:
    """Fill `run` (already built with the right shapes) from checkpoint folder `path`."""
    tensors = load_safetensors(path / f"{run_name}.safetensors", _repair(path))
    sae_state = {k[4:]: v for k, v in tensors.items() if k.startswith("sae.")}
    run.sae.load_state_dict(sae_state)
    _load_optimizer_tensors(run.sae, run.optimizer, tensors)
    for key in run.counters_F:
        run.counters_F[key].copy_(tensors[f"counter.{key}"])
    run.extra.update(read_json(path / f"{run_name}.json", _repair(path), dict))


def restore_rng(path: Path) -> None:
    rng = load_safetensors(path / "rng.safetensors", _repair(path))
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])


def resume_changes(state: dict[str, Any], cfg: Any) -> list[str]:
    """The configuration changes that forbid resuming checkpoint `state` with `cfg` (a `TrainConfig`).

    Every content field must match, except `total_tokens`: asking for more trains on from the checkpoint
    (the learning-rate schedule then spans the new total). Asking for fewer than the checkpoint already
    trained is refused.
    """
    changed = describe_differences(state["config"], cfg, "the checkpoint")
    longer = [line for line in changed if line.startswith("total_tokens:")]
    if longer and cfg.total_steps >= state["step"]:
        changed.remove(longer[0])
    elif longer:
        changed[changed.index(longer[0])] = (
            f"total_tokens: the checkpoint already trained {state['tokens']} tokens (step {state['step']}), "
            f"more than the {cfg.total_tokens} requested"
        )
    return changed


def finished_summaries(out_dir: Path, cfg: Any) -> dict[str, Any] | None:
    """The recorded summaries if `out_dir` holds this exact run, finished (its newest checkpoint at the
    last step, every SAE and `sweep.json` written with complete metrics); else None (train or resume)."""
    latest = latest_checkpoint(out_dir)
    sweep = Path(out_dir) / "sweep.json"
    if latest is None or not sweep.is_file():
        return None
    state = read_trainer_state(latest)
    if state["step"] != cfg.total_steps or describe_differences(state["config"], cfg, "the checkpoint"):
        return None
    try:
        summaries = read_json(sweep, kind=dict)
    except DamagedFile:  # written last and atomically; if damaged anyway, finishing again rewrites it
        return None
    names = [run["name"] for run in state["runs"]]
    complete = sorted(summaries) == sorted(names) and all(
        summaries[name].get("final_metrics", {}).get("fvu") is not None
        and (Path(out_dir) / name / "sae.safetensors").is_file()
        and (Path(out_dir) / name / "sae.json").is_file()
        for name in names
    )
    return {name: summaries[name] for name in names} if complete else None
