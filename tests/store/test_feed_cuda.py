"""The GPU feed (runs only where CUDA is present): batches arrive on the device in the stored dtype and
equal the CPU feed's, whether the store is read from disk, held in pinned RAM or held in GPU memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import HOOK, harvest_small_store
from vitsae.store import ActivationStore

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("hold", ["disk", "ram", "device"])
def test_cuda_batches_equal_cpu_batches(tmp_path: Path, hold: str) -> None:
    store = harvest_small_store(tmp_path)
    assert store.path == tmp_path / HOOK
    kwargs = {"seed": 2, "epochs": 2, "chunk_rows": 16, "window_rows": 48, "keep_dtype": True}
    want = list(store.batches(20, **kwargs))
    held = None
    if hold != "disk":
        held = store.hold("cuda" if hold == "device" else "cpu", pin=hold == "ram")
    got = list(ActivationStore.open(store.path).batches(20, device="cuda", held=held, **kwargs))
    assert all(b.is_cuda and b.dtype == want[0].dtype for b in got)
    assert all(torch.equal(a.cpu(), b) for a, b in zip(got, want, strict=True))
