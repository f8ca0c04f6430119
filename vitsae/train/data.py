"""Resumable sources of activation batches for the trainer.

The trainer asks a source for `batches(epoch, start_batch)`: an iterator over that epoch's batches
`acts_BD`, starting at `start_batch`. Resuming a run only needs those two numbers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import torch
from safetensors import SafetensorError, safe_open

from vitsae.distributed import local_device
from vitsae.errors import InvalidValue, MissingFile, MissingKey
from vitsae.fileio import damaged

if TYPE_CHECKING:
    from vitsae.train.config import TrainConfig

Hold = Literal["disk", "ram", "device"]


@runtime_checkable
class BatchSource(Protocol):
    """Anything that can replay epoch `epoch` of activation batches from batch `start_batch` on."""

    def batches(self, epoch: int, start_batch: int) -> Iterator[torch.Tensor]: ...


class TensorBatches:
    """Shuffled equal-sized batches of an `[N, D]` tensor; each epoch's order depends on (seed, epoch)."""

    def __init__(self, acts_ND: torch.Tensor, batch_size: int, seed: int = 0, shuffle: bool = True) -> None:
        if acts_ND.dim() != 2:
            raise InvalidValue(f"activations must be [N, D], got shape {tuple(acts_ND.shape)}")
        if acts_ND.shape[0] < batch_size:
            raise InvalidValue(f"{acts_ND.shape[0]} activation rows are fewer than one batch ({batch_size})")
        self.acts_ND = acts_ND
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle

    @property
    def d_in(self) -> int:
        return self.acts_ND.shape[1]

    def __len__(self) -> int:
        return self.acts_ND.shape[0] // self.batch_size

    def batches(self, epoch: int, start_batch: int) -> Iterator[torch.Tensor]:
        n = self.acts_ND.shape[0]
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        for b in range(start_batch, len(self)):
            yield self.acts_ND[order[b * self.batch_size : (b + 1) * self.batch_size]]


class IterableBatches:
    """Adapts a batch factory `(epoch, start_batch) -> iterable`, or a re-iterable collection of batches.

    A collection is iterated afresh each epoch and `start_batch` batches are skipped; a one-shot
    iterator therefore gives a single epoch.
    """

    def __init__(self, batches: Callable[[int, int], Iterable[torch.Tensor]] | Iterable[torch.Tensor]):
        self._source = batches

    def batches(self, epoch: int, start_batch: int) -> Iterator[torch.Tensor]:
        if callable(self._source):
            return iter(self._source(epoch, start_batch))
        return itertools.islice(iter(self._source), start_batch, None)


def as_batch_source(batches) -> BatchSource:
    """A `BatchSource` from a source, a factory `(epoch, start_batch) -> iterable` or an iterable."""
    if isinstance(batches, BatchSource):
        return batches
    return IterableBatches(batches)


def load_activation_file(path: str | Path, key: str = "activations") -> torch.Tensor:
    """The `[N, D]` tensor stored under `key` in a safetensors file."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise InvalidValue(f"{path}: activations must be a .safetensors file holding {key!r} [N, D]")
    if not path.is_file():
        raise MissingFile(f"{path} is missing: pass --activations a .safetensors file holding {key!r} [N, D]")
    try:
        with safe_open(str(path), framework="pt") as fh:
            keys = list(fh.keys())
            if key not in keys:
                raise MissingKey(f"{path} has no tensor {key!r}; it holds {keys}")
            acts_ND = fh.get_tensor(key)
    except (SafetensorError, OverflowError, MemoryError) as err:
        what = f"not a readable safetensors file ({err})"
        raise damaged(path, what, "write the activations file again") from err
    if acts_ND.dim() != 2:
        raise InvalidValue(f"{path}: {key!r} must be [N, D], got shape {tuple(acts_ND.shape)}")
    return acts_ND


class StoreBatches:
    """Shuffled training batches from a harvested activation store (through its public reader).

    Exposes what the SAE records about its data: `d_in`, `norm_scale` (the store's sqrt(D) / E||x||),
    `hook_name`, `model_spec` and `store` (the folder). For a GPU the batches stay in the stored dtype
    (float16/bfloat16) and arrive on the device already (pinned memory, non-blocking copies, the next ones
    in flight); on the CPU they are float32. `hold` "ram" or "device" loads the whole store once (printing
    the memory it takes); the batches are the same as from "disk".
    """

    def __init__(
        self,
        path: str | Path,
        batch_size: int,
        seed: int = 0,
        *,
        read_chunk_mib: int = 4,
        shuffle_window_mib: int = 512,
        hold: Hold = "disk",
        device: str = "cpu",
        progress: bool = False,
    ) -> None:
        from vitsae.store import ActivationStore  # the store stack is imported only when a store is used

        self.reader = ActivationStore.open(path)
        self.batch_size = batch_size
        self.seed = seed
        self.d_in = self.reader.d_model
        self.norm_scale = self.reader.norm_scale
        self.hook_name = self.reader.hook
        self.model_spec = str(self.reader.manifest.get("model", {}).get("spec", ""))
        self.store = str(Path(path).resolve())
        if len(self.reader) < batch_size:
            raise InvalidValue(
                f"{path}: {len(self.reader)} stored rows are fewer than a batch ({batch_size})"
            )
        row_bytes = self.reader.row_bytes
        self.chunk_rows = max(1, (read_chunk_mib << 20) // row_bytes)
        self.window_rows = max(self.chunk_rows, (shuffle_window_mib << 20) // row_bytes)
        self.device = local_device(device)
        self.held = self._hold(hold, progress)

    def _hold(self, hold: Hold, progress: bool) -> torch.Tensor | None:
        """Load the store into RAM or GPU memory as asked (after checking it fits), saying how much."""
        cuda = self.device.type == "cuda"
        need = len(self.reader) * self.reader.row_bytes
        if hold == "disk":
            window = min(self.window_rows, len(self.reader)) * self.reader.row_bytes
            print(f"reading {self.store} from disk: two shuffle windows of {_gib(window)} in RAM")
            return None
        if hold == "device" and not cuda:
            raise InvalidValue(f"hold 'device' needs a CUDA device (the device is {self.device}); use ram")
        free = torch.cuda.mem_get_info(self.device)[0] if hold == "device" else _available_ram()
        where = f"GPU memory ({self.device})" if hold == "device" else "RAM"
        if free is not None and need > 0.9 * free:
            raise InvalidValue(
                f"{self.store} takes {_gib(need)}, more than 90% of the {_gib(free)} of {where} free; "
                "use hold 'disk'" + (" or 'ram'" if hold == "device" else "")
            )
        pinned = " (pinned)" if hold == "ram" and cuda else ""
        print(f"holding {self.store} in {where}: {_gib(need)}{pinned}")
        target = self.device if hold == "device" else "cpu"
        return self.reader.hold(target, pin=hold == "ram" and cuda, progress=progress)

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> StoreBatches:
        """The batches `cfg` asks for from `cfg.store`."""
        return cls(
            cfg.store,
            cfg.batch_size,
            cfg.seed,
            read_chunk_mib=cfg.read_chunk_mib,
            shuffle_window_mib=cfg.shuffle_window_mib,
            hold=cfg.hold,
            device=cfg.device,
            progress=cfg.progress,
        )

    def batches(self, epoch: int, start_batch: int) -> Iterator[torch.Tensor]:
        return iter(
            self.reader.batches(
                self.batch_size,
                seed=self.seed,
                start=(epoch, start_batch),
                epochs=epoch + 1,
                drop_last=True,
                chunk_rows=self.chunk_rows,
                window_rows=self.window_rows,
                device=self.device,
                keep_dtype=self.device.type == "cuda",
                held=self.held,
            )
        )


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


def _available_ram() -> int | None:
    """Bytes of memory available to new allocations (Linux MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
