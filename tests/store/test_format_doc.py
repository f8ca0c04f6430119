"""The numpy-only example reader in docs/store-format.md runs and reads what ActivationStore reads."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from tests.helpers import shapes, tiny_vit
from tests.store.store_worker import HOOKS, config
from vitsae.store import ActivationStore, harvest

DOC = Path(__file__).resolve().parents[2] / "docs" / "store-format.md"


def example_reader():
    text = DOC.read_text()
    section = text.split("## Example reader", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    return namespace["read_store"]


def test_doc_example_reads_every_dtype(harvested: Path, tmp_path: Path) -> None:
    read_store = example_reader()
    stores = [harvested / HOOKS[0]]
    for dtype in ("bfloat16", "float32"):
        cfg = config(tmp_path / dtype, 8, dtype=dtype, hooks=(HOOKS[0],))
        harvest(cfg, model=tiny_vit(), source=shapes(8))
        stores.append(tmp_path / dtype / HOOKS[0])
    for store_dir in stores:
        store = ActivationStore.open(store_dir)
        parts = list(read_store(str(store_dir)))
        assert len(parts) == store.manifest["counts"]["shards"]
        acts = np.concatenate([p[0] for p in parts])
        assert acts.dtype == np.float32
        assert torch.equal(torch.from_numpy(acts), store[:])
        images, tokens = store.provenance(np.arange(len(store)))
        assert np.array_equal(np.concatenate([p[1] for p in parts]), images)
        assert np.array_equal(np.concatenate([p[2] for p in parts]), tokens)
