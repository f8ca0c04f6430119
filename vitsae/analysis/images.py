"""Per-image data for the browser's image explorer, for a chosen set of a store's images.

For each chosen image and each of its stored tokens: the strongest `top_codes` SAE features (what fires
there), the relative reconstruction error ‖x − x̂‖² / ‖x‖² (what the SAE misses there), and the token's raw
activation projected onto the top `embed_dims` uncentred principal directions of the chosen images' tokens,
unit-normalised and stored as int8 (×127): the page takes the dot product of two of these as the cosine of
the raw activations (the projection keeps `embed_energy` of their squared norm). Per image: the fraction of
its squared activation norm the SAE reconstructs, 1 − Σ‖x − x̂‖² / Σ‖x‖², and the `n_similar` other chosen
images whose mean embeddings are closest (the strip of similarity overlays).

`images.safetensors` + `images.json` (format `vitsae.images`, version 1, in the statistics folder):
int64 `image_I`, `token_T`, int32 `code_index_ITc`, float32 `code_value_ITc` (unused slots -1 / 0),
float32 `error_IT`, `recon_I`, int8 `embed_ITd`, int32 `similar_In` (positions in `image_I`); the JSON
holds the format, `embed_energy`, `top_codes`, `embed_dims`, the store and the hook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vitsae.errors import InvalidValue, MissingFile
from vitsae.fileio import check_format, load_safetensors, read_json, save_tensors_atomic, write_json_atomic
from vitsae.sae.model import SparseAutoencoder
from vitsae.store.reader import ActivationStore

IMAGES_TENSORS = "images.safetensors"
IMAGES_META = "images.json"
IMAGES_FORMAT = "vitsae.images"
IMAGES_VERSION = 1
_FIELDS = (
    "image_I",
    "token_T",
    "code_index_ITc",
    "code_value_ITc",
    "error_IT",
    "recon_I",
    "embed_ITd",
    "similar_In",
)


@dataclass
class ImageData:
    """What the image explorer shows for each chosen image (see module doc); rows follow `image_I`."""

    image_I: torch.Tensor
    token_T: torch.Tensor
    code_index_ITc: torch.Tensor
    code_value_ITc: torch.Tensor
    error_IT: torch.Tensor
    recon_I: torch.Tensor
    embed_ITd: torch.Tensor
    similar_In: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, stats_dir: str | Path) -> None:
        stats_dir = Path(stats_dir)
        save_tensors_atomic(stats_dir / IMAGES_TENSORS, {name: getattr(self, name) for name in _FIELDS})
        write_json_atomic(
            stats_dir / IMAGES_META, {"format": IMAGES_FORMAT, "format_version": IMAGES_VERSION, **self.meta}
        )

    @classmethod
    def load(cls, stats_dir: str | Path) -> ImageData | None:
        """The folder's image data, or None when `vitsae stats` was run without `--images`."""
        stats_dir = Path(stats_dir)
        meta_path = stats_dir / IMAGES_META
        if not meta_path.is_file():
            return None
        meta = read_json(meta_path, "rerun `vitsae stats --images N`", dict)
        check_format(meta_path, meta, IMAGES_FORMAT, IMAGES_VERSION, fix="rerun `vitsae stats`")
        if not (stats_dir / IMAGES_TENSORS).is_file():
            raise MissingFile(f"{stats_dir / IMAGES_TENSORS} is missing: rerun `vitsae stats --images N`")
        tensors = load_safetensors(stats_dir / IMAGES_TENSORS, "rerun `vitsae stats --images N`")
        missing = [name for name in _FIELDS if name not in tensors]
        if missing:
            raise InvalidValue(
                f"{stats_dir / IMAGES_TENSORS} lacks {missing}: rerun `vitsae stats --images N`"
            )
        return cls(**{name: tensors[name] for name in _FIELDS}, meta=meta)


def first_images(store: ActivationStore, n: int, chunk: int = 1 << 16) -> list[int]:
    """The first `n` image indices the store holds (fewer if it holds fewer)."""
    found: list[int] = []
    for start in range(0, len(store), chunk):
        image_R, _ = store.provenance(np.arange(start, min(len(store), start + chunk)))
        for image in np.unique(image_R).tolist():
            if image not in found[-1:]:
                found.append(int(image))
        if len(found) > n:
            break
    return sorted(set(found))[:n]


def _rows_of_images(store: ActivationStore, images: list[int], chunk: int = 1 << 16) -> dict[int, np.ndarray]:
    """The store rows of each chosen image (rows are in image order, so the scan stops past the last)."""
    wanted, last = set(images), max(images)
    rows: dict[int, list[np.ndarray]] = {i: [] for i in images}
    for start in range(0, len(store), chunk):
        span = np.arange(start, min(len(store), start + chunk))
        image_R, _ = store.provenance(span)
        for image in np.unique(image_R):
            if int(image) in wanted:
                rows[int(image)].append(span[image_R == image])
        if image_R[-1] > last:
            break
    found = {i: np.concatenate(r) for i, r in rows.items() if r}
    if len(found) < len(images):
        absent = sorted(set(images) - set(found))
        raise InvalidValue(
            f"images {absent[:10]} are not in the store {store.path} (skipped or out of range)"
        )
    return found


@torch.no_grad()
def compute_image_data(
    store: ActivationStore,
    sae: SparseAutoencoder,
    images: list[int],
    *,
    top_codes: int = 8,
    embed_dims: int = 32,
    n_similar: int = 7,
    progress: bool = False,
) -> ImageData:
    """The explorer's data for `images` of `store` (raw rows) under `sae` (see module doc)."""
    if store.normalize:
        raise InvalidValue(
            "open the store with normalize=False: the SAE applies its own norm_scale to raw rows"
        )
    images = sorted(set(int(i) for i in images))
    if not images:
        raise InvalidValue("choose at least one image for the image explorer")
    rows = _rows_of_images(store, images)
    counts = {len(r) for r in rows.values()}
    if len(counts) != 1:
        raise InvalidValue("the chosen images hold different numbers of tokens in the store")
    (n_tokens,) = counts
    _, token_T = store.provenance(rows[images[0]])
    device = next(sae.parameters()).device
    acts_ITD = torch.stack([store[rows[i]].float() for i in images])
    n_images, _, width = acts_ITD.shape
    index_ITc = torch.full((n_images, n_tokens, top_codes), -1, dtype=torch.int32)
    value_ITc = torch.zeros((n_images, n_tokens, top_codes), dtype=torch.float32)
    error_IT = torch.zeros((n_images, n_tokens), dtype=torch.float32)
    recon_I = torch.zeros(n_images, dtype=torch.float32)
    for i in tqdm(range(n_images), desc="image explorer", unit="img", disable=not progress):
        x_TD = acts_ITD[i].to(device)
        codes = sae.encode_sparse(x_TD)
        x_hat_TD = sae.decode_sparse(codes)
        miss_T = (x_TD - x_hat_TD).pow(2).sum(1).cpu()
        norm_T = x_TD.pow(2).sum(1).cpu()
        error_IT[i] = miss_T / norm_T.clamp(min=1e-12)
        recon_I[i] = 1 - miss_T.sum() / norm_T.sum().clamp(min=1e-12)
        values_TK, indices_TK = codes.values_BK.float().cpu(), codes.indices_BK.cpu()
        width_c = min(top_codes, values_TK.shape[1])
        top_Tc, at_Tc = values_TK.topk(width_c, dim=1)
        index_ITc[i, :, :width_c] = torch.where(top_Tc > 0, indices_TK.gather(1, at_Tc), -1).to(torch.int32)
        value_ITc[i, :, :width_c] = top_Tc.clamp(min=0)
    flat_ND = acts_ITD.reshape(-1, width).double()
    sample = flat_ND[torch.randperm(flat_ND.shape[0], generator=torch.Generator().manual_seed(0))[:20000]]
    _, singular, V_dD = torch.linalg.svd(sample, full_matrices=False)
    dims = min(embed_dims, V_dD.shape[0])
    energy = float(singular[:dims].pow(2).sum() / singular.pow(2).sum().clamp(min=1e-300))
    embed_Nd = torch.nn.functional.normalize((flat_ND @ V_dD[:dims].T).float(), dim=1)
    embed_ITd = torch.round(embed_Nd * 127).to(torch.int8).reshape(n_images, n_tokens, dims)
    mean_Id = torch.nn.functional.normalize(embed_Nd.reshape(n_images, n_tokens, dims).mean(1), dim=1)
    cos_II = mean_Id @ mean_Id.T
    cos_II.fill_diagonal_(-2.0)
    n_similar = min(n_similar, n_images - 1)
    similar_In = cos_II.topk(n_similar, dim=1).indices.to(torch.int32)
    meta = {
        "store": str(Path(store.path).resolve()),
        "hook": store.hook,
        "top_codes": top_codes,
        "embed_dims": dims,
        "embed_energy": round(energy, 5),
    }
    return ImageData(
        torch.tensor(images, dtype=torch.int64),
        torch.from_numpy(token_T.astype(np.int64)),
        index_ITc,
        value_ITc,
        error_IT,
        recon_I,
        embed_ITd,
        similar_In,
        meta,
    )
