"""Count the operations of a code block that make the host wait for the device on CUDA.

On CPU nothing waits, so this counts the ATen calls that would block on a GPU: reading a scalar
(`.item()`, `int()`, `bool()`), `nonzero`, boolean-mask indexing, `masked_select`, `bincount`,
`unique` and `repeat_interleave` without an output size. It also counts every ATen call (about one
kernel launch each, views aside), so a change that adds syncs or launches to a training step shows up
in tests/kernels/test_host_syncs.py and in scripts/bench_kernels.py.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "bincount", "_unique2", "unique_dim"}


class HostSyncCounter(TorchDispatchMode):
    """`with HostSyncCounter() as c: ...`, then `c.syncs` (a Counter by op name) and `c.ops` (ATen calls)."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: Counter[str] = Counter()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name.split("::")[-1]
        self.ops += 1
        if name in _SYNC_OPS or _is_mask_index(name, args) or _is_sized_free_repeat(name, kwargs):
            self.syncs[name] += 1
        return func(*args, **kwargs)

    @property
    def n_syncs(self) -> int:
        return sum(self.syncs.values())


def _is_mask_index(name: str, args) -> bool:
    if name not in ("index", "index_put_", "index_put") or len(args) < 2:
        return False
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None)


def _is_sized_free_repeat(name: str, kwargs) -> bool:
    return name == "repeat_interleave" and kwargs.get("output_size") is None
