"""vitsae/distributed.py in one process (the multi-process paths run in tests/train and tests/store)."""

from __future__ import annotations

import torch

from vitsae.distributed import barrier, init_if_torchrun, local_device, rank_world


def test_one_process_is_rank_zero_of_one_and_starts_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_if_torchrun() is False
    assert rank_world() == (0, 1)
    barrier()  # nothing to wait for
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_if_torchrun("gloo") is False


def test_local_device(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert local_device("cpu") == torch.device("cpu")
    assert local_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert local_device("cuda") == torch.device("cuda")
    assert local_device("cuda:1") == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert local_device("cuda") == torch.device("cuda", 1)  # torchrun's local rank, wrapped to the GPUs
    assert local_device("cpu") == torch.device("cpu")
