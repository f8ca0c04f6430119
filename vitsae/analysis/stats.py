"""Per-feature statistics of an SAE's codes, accumulated in one streaming pass with bounded memory.

For every feature: firing count and activation sum (frequency and mean), the number of images it fires
in, an activation histogram over log-spaced bins, the top-k images ranked by their strongest patch with
each one's per-patch activation map and label, the top-k single patches, and a uniform random sample of
its firing tokens from which the report picks examples at activation quantiles.

Memory is O(F·k·P) whatever the number of images. Each `update` takes the sparse codes of the tokens of
whole images (every stored token of an image in the same call, images in increasing index order, which is
the order a store is read sequentially); per-image maxima and maps come from those rows alone.

The random sample is bottom-k (priority) sampling: every firing token draws a uniform key and each
feature keeps the `n_samples` largest keys, which is a uniform sample without replacement of its firing
tokens, merged with the same top-k machinery as the images. Quantile examples are therefore approximate:
the sample's q-quantile estimates the feature's, with standard error about sqrt(q(1-q)/n_samples) in rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vitsae.analysis.topk import TopKBuffer
from vitsae.config import check_choices, config_from_dict, content_fields
from vitsae.errors import InvalidValue, MissingFile
from vitsae.fileio import (
    check_format,
    damaged,
    load_safetensors,
    read_json,
    save_tensors_atomic,
    write_json_atomic,
)
from vitsae.sae.provenance import ALLOW_HELP
from vitsae.tokens import TokenLayout

STATS_FORMAT = "vitsae.feature_stats"
STATS_FORMAT_VERSION = 1
STATS_TENSORS = "feature_stats.safetensors"
STATS_META = "feature_stats.json"
RECOMPUTE = "recompute it: rerun the `vitsae stats` command that made it"
PARTIAL_DIR = ".feature_stats.partial"  # a resumable pass's checkpoints, inside the output folder


@dataclass(frozen=True)
class StatsConfig:
    """What the statistics pass keeps per feature."""

    k_images: int = field(default=16, metadata={"help": "top images kept per feature"})
    k_patches: int = field(default=16, metadata={"help": "top single patches kept per feature"})
    n_samples: int = field(default=64, metadata={"help": "random firing tokens kept per feature (quantiles)"})
    hist_bins: int = field(default=48, metadata={"help": "log-spaced activation histogram bins"})
    hist_min: float = field(default=1e-3, metadata={"help": "lower edge of the histogram (first bin open)"})
    hist_max: float = field(default=1e3, metadata={"help": "upper edge of the histogram (last bin open)"})
    seed: int = field(default=0, metadata={"help": "seed of the random sample's keys"})
    co_slots: int = field(
        default=8,
        metadata={"help": "strongest features of each sampled token kept (co-activation, nearest features)"},
    )
    store: Path | None = field(
        default=None,
        metadata={"help": "activation store directory (one hook)", "run_only": True, "required": True},
    )
    sae: Path | None = field(
        default=None, metadata={"help": "trained SAE directory", "run_only": True, "required": True}
    )
    out: Path | None = field(
        default=None,
        metadata={
            "help": "directory for feature_stats.{safetensors,json}",
            "run_only": True,
            "required": True,
        },
    )
    batch_rows: int = field(default=8192, metadata={"help": "rows encoded per step", "run_only": True})
    merge_rows: int = field(
        default=65536, metadata={"help": "rows merged into the statistics per step", "run_only": True}
    )
    checkpoint_every_rows: int = field(
        default=1_000_000,
        metadata={
            "help": f"save the pass's state into <out>/{PARTIAL_DIR} about every N rows, so rerunning an "
            "interrupted command continues it; 0 saves none",
            "run_only": True,
        },
    )
    restart: bool = field(
        default=False,
        metadata={"help": f"discard a partial pass in <out>/{PARTIAL_DIR} and start over", "run_only": True},
    )
    model: str | None = field(
        default=None,
        metadata={
            "help": "model spec for the logit effects (default: the store's recorded one; 'none' to skip)",
            "run_only": True,
        },
    )
    images: int = field(
        default=0,
        metadata={
            "help": "image explorer: save per-image data (top features, error, embeddings per patch) for the "
            "store's first N images (0: none)",
            "run_only": True,
        },
    )
    image_ids: tuple[int, ...] | None = field(
        default=None,
        metadata={
            "help": "image explorer: these image indices of the store instead of the first --images N",
            "run_only": True,
        },
    )
    neighbours: int = field(
        default=8,
        metadata={
            "help": "nearest features saved per feature (decoder cosine, co-activation)",
            "run_only": True,
        },
    )
    device: str = field(default="cpu", metadata={"help": "torch device for the SAE", "run_only": True})
    progress: bool = field(default=True, metadata={"help": "show a progress bar", "run_only": True})
    allow_other_model: bool = field(default=False, metadata={"help": ALLOW_HELP, "run_only": True})

    def __post_init__(self) -> None:
        check_choices(self)
        if self.batch_rows < 1 or self.merge_rows < 1 or self.checkpoint_every_rows < 0:
            raise InvalidValue(
                "batch_rows and merge_rows must be >= 1 and checkpoint_every_rows >= 0 (0: never); got "
                f"{self.batch_rows}, {self.merge_rows}, {self.checkpoint_every_rows}"
            )
        if self.images < 0 or self.neighbours < 1:
            raise InvalidValue(
                f"images must be >= 0 and neighbours >= 1, got {self.images}, {self.neighbours}"
            )
        for name in ("k_images", "k_patches", "n_samples", "hist_bins", "co_slots"):
            if getattr(self, name) < 1:
                raise InvalidValue(f"StatsConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.hist_min < self.hist_max:
            raise InvalidValue(
                f"StatsConfig needs 0 < hist_min < hist_max, got {self.hist_min} and {self.hist_max}"
            )

    def hist_edges(self) -> torch.Tensor:
        return torch.logspace(
            torch.log10(torch.tensor(self.hist_min)).item(),
            torch.log10(torch.tensor(self.hist_max)).item(),
            self.hist_bins + 1,
            dtype=torch.float64,
        )


@dataclass
class FeatureStats:
    """The finished statistics. Per-feature lists are sorted best first; empty slots hold image -1.

    `top_image_map_FkP` is uint8: the activation of each patch divided by the image's score, times 255.
    """

    config: StatsConfig
    layout: TokenLayout
    n_tokens: int
    n_images: int
    fire_count_F: torch.Tensor
    act_sum_F: torch.Tensor
    max_act_F: torch.Tensor
    image_fire_count_F: torch.Tensor
    hist_edges: torch.Tensor
    hist_FH: torch.Tensor
    top_image_score_Fk: torch.Tensor
    top_image_index_Fk: torch.Tensor
    top_image_label_Fk: torch.Tensor
    top_image_map_FkP: torch.Tensor
    top_patch_value_Fk: torch.Tensor
    top_patch_image_Fk: torch.Tensor
    top_patch_token_Fk: torch.Tensor
    sample_value_FS: torch.Tensor
    sample_image_FS: torch.Tensor
    sample_token_FS: torch.Tensor
    sample_cofire_FSc: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.fire_count_F.shape[0])

    def frequency_F(self) -> torch.Tensor:
        """Fraction of tokens on which each feature fires."""
        return self.fire_count_F.double() / max(self.n_tokens, 1)

    def mean_active_F(self) -> torch.Tensor:
        """Mean activation over the tokens where each feature fires (0 for dead features)."""
        return self.act_sum_F / self.fire_count_F.clamp(min=1)

    def max_activation_F(self) -> torch.Tensor:
        """Largest activation over every token (class and register tokens included)."""
        return self.max_act_F

    def image_map(self, feature: int, rank: int) -> torch.Tensor:
        """The activation map [gh, gw] (float32, activation units) of a feature's rank-th top image."""
        scale = self.top_image_score_Fk[feature, rank].clamp(min=0) / 255.0
        return (self.top_image_map_FkP[feature, rank].float() * scale).reshape(self.layout.grid_hw or (0, 0))

    def quantile_examples(
        self, feature: int, quantiles: tuple[float, ...]
    ) -> list[tuple[float, int, int, float]]:
        """(quantile, image, token, value) picked from the feature's random sample, for each quantile."""
        valid = self.sample_image_FS[feature] >= 0
        values = self.sample_value_FS[feature][valid]
        if values.numel() == 0:
            return []
        order = torch.argsort(values)
        images = self.sample_image_FS[feature][valid][order]
        tokens = self.sample_token_FS[feature][valid][order]
        values = values[order]
        picks = []
        for q in quantiles:
            i = round(q * (values.numel() - 1))
            picks.append((q, int(images[i]), int(tokens[i]), float(values[i])))
        return picks

    def save(self, out_dir: str | Path) -> Path:
        """Write `feature_stats.safetensors` + `feature_stats.json` into `out_dir`."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tensors = {name: getattr(self, name) for name in _TENSOR_FIELDS}
        if self.sample_cofire_FSc is not None:
            tensors["sample_cofire_FSc"] = self.sample_cofire_FSc
        save_tensors_atomic(out_dir / STATS_TENSORS, tensors)
        write_json_atomic(
            out_dir / STATS_META,
            {
                "format": STATS_FORMAT,
                "format_version": STATS_FORMAT_VERSION,
                "config": content_fields(self.config),
                "n_prefix_tokens": self.layout.n_prefix,
                "grid_hw": self.layout.to_dict()["grid_hw"],
                "token_layout": self.layout.to_dict(),
                "width": self.layout.width,
                "n_features": self.n_features,
                "n_tokens": self.n_tokens,
                "n_images": self.n_images,
                "meta": self.meta,
            },
        )
        return out_dir

    @classmethod
    def load(cls, stats_dir: str | Path) -> FeatureStats:
        stats_dir = Path(stats_dir)
        meta_path = stats_dir / STATS_META
        if not meta_path.is_file():
            raise MissingFile(f"no {STATS_META} in {stats_dir}: not a feature statistics directory")
        info = check_format(
            meta_path, read_json(meta_path, RECOMPUTE, dict), STATS_FORMAT, STATS_FORMAT_VERSION
        )
        tensors = load_safetensors(stats_dir / STATS_TENSORS, RECOMPUTE)
        missing = sorted(set(_TENSOR_FIELDS) - set(tensors))
        if missing:
            raise InvalidValue(f"{stats_dir / STATS_TENSORS} lacks tensors {missing}; {RECOMPUTE}")
        try:
            return cls(
                config=config_from_dict(StatsConfig, info["config"]),
                layout=_layout(info),
                n_tokens=info["n_tokens"],
                n_images=info["n_images"],
                meta=info["meta"],
                sample_cofire_FSc=tensors.get("sample_cofire_FSc"),  # absent in files written before it
                **{name: tensors[name] for name in _TENSOR_FIELDS},
            )
        except (KeyError, TypeError, ValueError) as err:
            raise damaged(meta_path, f"an entry is missing or unusable ({err!r})", RECOMPUTE) from err


def _layout(info: dict[str, Any]) -> TokenLayout:
    """The token layout of a stats JSON; files written before `token_layout` was recorded beside
    `n_prefix_tokens` count every prefix token as a class token, and their width is the SAE's d_in."""
    if "token_layout" in info:
        return TokenLayout.from_dict(info["token_layout"], info["width"])
    width = info["meta"].get("sae_config", {}).get("d_in", 0)
    legacy = {"n_cls": info["n_prefix_tokens"], "n_registers": 0, "grid_hw": info["grid_hw"]}
    return TokenLayout.from_dict(legacy, width)


_TENSOR_FIELDS = (
    "fire_count_F",
    "act_sum_F",
    "max_act_F",
    "image_fire_count_F",
    "hist_edges",
    "hist_FH",
    "top_image_score_Fk",
    "top_image_index_Fk",
    "top_image_label_Fk",
    "top_image_map_FkP",
    "top_patch_value_Fk",
    "top_patch_image_Fk",
    "top_patch_token_Fk",
    "sample_value_FS",
    "sample_image_FS",
    "sample_token_FS",
)

# The accumulator's own statistics tensors (its top-k buffers add theirs under "images.", "patches.", ...).
_STATE_TENSORS = (
    "fire_count_F",
    "act_sum_F",
    "max_act_F",
    "image_fire_count_F",
    "hist_FH",
    "image_index_Fk",
    "image_label_Fk",
    "image_map_FkP",
    "patch_image_Fk",
    "patch_token_Fk",
    "sample_value_FS",
    "sample_image_FS",
    "sample_token_FS",
    "sample_cofire_FSc",
)


class FeatureStatsAccumulator:
    """Streams sparse codes of whole images in and keeps every feature's statistics (see module doc)."""

    def __init__(self, n_features: int, layout: TokenLayout, config: StatsConfig | None = None) -> None:
        self.config = config = config or StatsConfig()
        self.n_features = n_features
        self.layout = layout
        n_patches = layout.n_patches
        self.n_tokens = 0
        self.n_images = 0
        self._last_image = -1
        self._generator = torch.Generator().manual_seed(config.seed)
        self._inner_edges = config.hist_edges()[1:-1].float()

        self.fire_count_F = torch.zeros(n_features, dtype=torch.int64)
        self.act_sum_F = torch.zeros(n_features, dtype=torch.float64)
        self.max_act_F = torch.zeros(n_features, dtype=torch.float32)
        self.image_fire_count_F = torch.zeros(n_features, dtype=torch.int64)
        self.hist_FH = torch.zeros((n_features, config.hist_bins), dtype=torch.int64)

        self.images = TopKBuffer(n_features, config.k_images)
        self.image_index_Fk = torch.full((n_features, config.k_images), -1, dtype=torch.int64)
        self.image_label_Fk = torch.full((n_features, config.k_images), -1, dtype=torch.int64)
        self.image_map_FkP = torch.zeros((n_features, config.k_images, n_patches), dtype=torch.uint8)

        self.patches = TopKBuffer(n_features, config.k_patches)
        self.patch_image_Fk = torch.full((n_features, config.k_patches), -1, dtype=torch.int64)
        self.patch_token_Fk = torch.full((n_features, config.k_patches), -1, dtype=torch.int64)

        self.samples = TopKBuffer(n_features, config.n_samples)
        self.sample_value_FS = torch.zeros((n_features, config.n_samples), dtype=torch.float32)
        self.sample_image_FS = torch.full((n_features, config.n_samples), -1, dtype=torch.int64)
        self.sample_token_FS = torch.full((n_features, config.n_samples), -1, dtype=torch.int64)
        self.sample_cofire_FSc = torch.full(
            (n_features, config.n_samples, config.co_slots), -1, dtype=torch.int32
        )

    def update(
        self,
        indices_NK: torch.Tensor,
        values_NK: torch.Tensor,
        image_N: torch.Tensor,
        token_N: torch.Tensor,
        label_N: torch.Tensor | None = None,
    ) -> None:
        """Add the codes of every token of some whole images (rows in any order within the call).

        A code counts as firing where its value is > 0 (unused sparse slots hold value 0).
        """
        n_rows = image_N.shape[0]
        if indices_NK.shape != values_NK.shape or indices_NK.dim() != 2 or indices_NK.shape[0] != n_rows:
            raise InvalidValue(
                f"codes must be [N, K] indices and values for N={n_rows} rows, got indices "
                f"{tuple(indices_NK.shape)} and values {tuple(values_NK.shape)}"
            )
        if token_N.shape != image_N.shape or (label_N is not None and label_N.shape != image_N.shape):
            raise InvalidValue(
                f"image {tuple(image_N.shape)}, token {tuple(token_N.shape)} and label "
                f"{None if label_N is None else tuple(label_N.shape)} indices must share one shape [N]"
            )
        if n_rows == 0:
            return
        image_N = image_N.long()
        token_N = token_N.long()
        first_image = int(image_N.min())
        if first_image <= self._last_image:
            raise InvalidValue(
                f"image {first_image} arrives after image {self._last_image}: feed whole images in "
                "increasing image order (read the store sequentially, unshuffled, and split batches "
                "between images)"
            )
        if int(indices_NK.max()) >= self.n_features or int(indices_NK.min()) < 0:
            raise InvalidValue(
                f"feature indices span [{int(indices_NK.min())}, {int(indices_NK.max())}] but the "
                f"dictionary has {self.n_features} features"
            )
        local_images, local_image_N = torch.unique(image_N, return_inverse=True)
        self._last_image = int(local_images[-1])
        self.n_images += local_images.numel()
        self.n_tokens += n_rows
        label_I = torch.full((local_images.numel(),), -1, dtype=torch.int64)
        if label_N is not None:
            label_I[local_image_N] = label_N.long()

        firing = values_NK > 0
        row_E = firing.nonzero(as_tuple=True)[0]
        feature_E = indices_NK[firing].long()
        value_E = values_NK[firing].float()
        image_E, token_E = image_N[row_E], token_N[row_E]
        local_image_E = local_image_N[row_E]

        self._count(feature_E, value_E, local_image_E, local_images.numel())
        self._update_images(feature_E, value_E, local_image_E, token_E, local_images, label_I)
        patch_E = token_E - self.layout.n_prefix
        is_patch_E = (patch_E >= 0) & (patch_E < self.layout.n_patches)
        writes = self.patches.update(feature_E[is_patch_E], value_E[is_patch_E])
        self.patch_image_Fk[writes.feature_W, writes.slot_W] = image_E[is_patch_E][writes.candidate_W]
        self.patch_token_Fk[writes.feature_W, writes.slot_W] = token_E[is_patch_E][writes.candidate_W]

        keys_E = torch.rand(feature_E.shape, generator=self._generator)
        writes = self.samples.update(feature_E, keys_E)
        self.sample_value_FS[writes.feature_W, writes.slot_W] = value_E[writes.candidate_W]
        self.sample_image_FS[writes.feature_W, writes.slot_W] = image_E[writes.candidate_W]
        self.sample_token_FS[writes.feature_W, writes.slot_W] = token_E[writes.candidate_W]
        cofire_NC = _strongest_features(indices_NK, values_NK, self.config.co_slots)
        self.sample_cofire_FSc[writes.feature_W, writes.slot_W] = cofire_NC[row_E[writes.candidate_W]]

    def _count(
        self, feature_E: torch.Tensor, value_E: torch.Tensor, local_image_E: torch.Tensor, n_images: int
    ) -> None:
        # index_put_ with accumulate costs O(entries), where bincount would allocate O(F * bins) per batch.
        n_features, n_bins = self.n_features, self.config.hist_bins
        ones_E = torch.ones_like(feature_E)
        self.fire_count_F.index_put_((feature_E,), ones_E, accumulate=True)
        self.act_sum_F.index_put_((feature_E,), value_E.double(), accumulate=True)
        self.max_act_F.scatter_reduce_(0, feature_E, value_E, reduce="amax")
        bin_E = torch.bucketize(value_E, self._inner_edges, right=True)
        self.hist_FH.view(-1).index_put_((feature_E * n_bins + bin_E,), ones_E, accumulate=True)
        fired_IF = torch.zeros(n_images * n_features, dtype=torch.bool)
        fired_IF[local_image_E * n_features + feature_E] = True
        self.image_fire_count_F += fired_IF.view(n_images, n_features).sum(0)

    def _update_images(
        self,
        feature_E: torch.Tensor,
        value_E: torch.Tensor,
        local_image_E: torch.Tensor,
        token_E: torch.Tensor,
        local_images: torch.Tensor,
        label_I: torch.Tensor,
    ) -> None:
        """Rank images by their strongest patch; keep the per-patch map of each new top image.

        Per-(image, feature) maxima go through a dense [images, F] table of this batch (its size is
        bounded by the batch, not the store), and so does the lookup from a patch entry to its new slot.
        """
        n_features, n_patches = self.n_features, self.layout.n_patches
        patch_E = token_E - self.layout.n_prefix
        # Without a patch grid (a CLS-only or pooled store) images are ranked by their strongest token
        # and keep no map.
        is_patch = (
            (patch_E >= 0) & (patch_E < n_patches)
            if n_patches
            else torch.ones_like(patch_E, dtype=torch.bool)
        )
        feature_E, value_E, patch_E = feature_E[is_patch], value_E[is_patch], patch_E[is_patch]
        pair_E = local_image_E[is_patch] * n_features + feature_E
        score_IF = torch.zeros(local_images.numel() * n_features, dtype=torch.float32)
        score_IF.scatter_reduce_(0, pair_E, value_E, reduce="amax")
        pair_C = score_IF.nonzero(as_tuple=True)[0]
        feature_C, image_C = pair_C % n_features, pair_C // n_features
        writes = self.images.update(feature_C, score_IF[pair_C])
        f_W, slot_W, pair_W = writes.feature_W, writes.slot_W, pair_C[writes.candidate_W]
        self.image_index_Fk[f_W, slot_W] = local_images[image_C[writes.candidate_W]]
        self.image_label_Fk[f_W, slot_W] = label_I[image_C[writes.candidate_W]]

        if not n_patches:
            return
        write_of_pair = torch.full(score_IF.shape, -1, dtype=torch.int64)
        write_of_pair[pair_W] = torch.arange(pair_W.numel())
        write_E = write_of_pair[pair_E]
        in_map = write_E >= 0
        maps_WP = torch.zeros((pair_W.numel(), self.layout.n_patches), dtype=torch.float32)
        maps_WP[write_E[in_map], patch_E[in_map]] = value_E[in_map]
        scaled_WP = maps_WP / score_IF[pair_W].clamp(min=torch.finfo(torch.float32).tiny)[:, None]
        self.image_map_FkP[f_W, slot_W] = torch.round(scaled_WP * 255).clamp(0, 255).to(torch.uint8)

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor `update` changes, as live references, by state-dict name."""
        state = {name: getattr(self, name) for name in _STATE_TENSORS}
        for buffer in ("images", "patches", "samples"):
            for name, tensor in getattr(self, buffer).state_tensors().items():
                state[f"{buffer}.{name}"] = tensor
        return state

    def state_dict(self) -> dict[str, torch.Tensor]:
        """A snapshot of the pass so far as named CPU tensors (ready for safetensors): every statistic,
        the top-k buffers, the counters and the random generator of the sample's keys. Loading it into an
        accumulator built with the same features, layout and config continues the pass exactly."""
        state = {name: tensor.clone() for name, tensor in self._state_tensors().items()}
        state["n_tokens"] = torch.tensor(self.n_tokens, dtype=torch.int64)
        state["n_images"] = torch.tensor(self.n_images, dtype=torch.int64)
        state["last_image"] = torch.tensor(self._last_image, dtype=torch.int64)
        state["generator_state"] = self._generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a `state_dict()`; one of another shape (features, layout, config) is refused unchanged."""
        targets = self._state_tensors()
        names = ("n_tokens", "n_images", "last_image")
        scalars = {name: torch.zeros((), dtype=torch.int64) for name in names}
        generator_state = torch.empty_like(self._generator.get_state())
        _copy_state_into(
            {**targets, **scalars, "generator_state": generator_state}, state, "FeatureStatsAccumulator"
        )
        self.n_tokens, self.n_images = int(scalars["n_tokens"]), int(scalars["n_images"])
        self._last_image = int(scalars["last_image"])
        self._generator.set_state(generator_state)

    def finish(self, meta: dict[str, Any] | None = None) -> FeatureStats:
        """The statistics so far, every per-feature list sorted best first."""
        image_order = self.images.order()
        patch_order = self.patches.order()
        sample_order = self.samples.order()

        def by(order: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
            index = order if values.dim() == 2 else order[..., None].expand_as(values)
            return torch.gather(values, 1, index)

        return FeatureStats(
            config=self.config,
            layout=self.layout,
            n_tokens=self.n_tokens,
            n_images=self.n_images,
            fire_count_F=self.fire_count_F.clone(),
            act_sum_F=self.act_sum_F.clone(),
            max_act_F=self.max_act_F.clone(),
            image_fire_count_F=self.image_fire_count_F.clone(),
            hist_edges=self.config.hist_edges(),
            hist_FH=self.hist_FH.clone(),
            top_image_score_Fk=by(image_order, self.images.scores_Fk).clamp(min=0),
            top_image_index_Fk=by(image_order, self.image_index_Fk),
            top_image_label_Fk=by(image_order, self.image_label_Fk),
            top_image_map_FkP=by(image_order, self.image_map_FkP),
            top_patch_value_Fk=by(patch_order, self.patches.scores_Fk).clamp(min=0),
            top_patch_image_Fk=by(patch_order, self.patch_image_Fk),
            top_patch_token_Fk=by(patch_order, self.patch_token_Fk),
            sample_value_FS=by(sample_order, self.sample_value_FS),
            sample_image_FS=by(sample_order, self.sample_image_FS),
            sample_token_FS=by(sample_order, self.sample_token_FS),
            sample_cofire_FSc=by(sample_order, self.sample_cofire_FSc),
            meta=dict(meta or {}),
        )


def _strongest_features(indices_NK: torch.Tensor, values_NK: torch.Tensor, slots: int) -> torch.Tensor:
    """Each row's `slots` strongest firing features, strongest first, padded with -1: int32 [N, slots]."""
    width = min(slots, values_NK.shape[1])
    top_NC, at_NC = values_NK.topk(width, dim=1)
    strongest_NC = torch.where(top_NC > 0, indices_NK.gather(1, at_NC), -1).to(torch.int32)
    return torch.nn.functional.pad(strongest_NC, (0, slots - width), value=-1)


def _copy_state_into(targets: dict[str, torch.Tensor], state: dict[str, torch.Tensor], what: str) -> None:
    """Copy `state[name]` into `targets[name]` for every name, after checking names, shapes and dtypes
    of all of them (a refused state changes nothing)."""
    if set(state) != set(targets):
        missing, unexpected = sorted(set(targets) - set(state)), sorted(set(state) - set(targets))
        raise InvalidValue(f"{what} state lacks tensors {missing} and has unexpected {unexpected}")
    wrong = [
        f"{name} is {state[name].dtype} {tuple(state[name].shape)}, here {have.dtype} {tuple(have.shape)}"
        for name, have in targets.items()
        if state[name].shape != have.shape or state[name].dtype != have.dtype
    ]
    if wrong:
        raise InvalidValue(f"{what} state is of another dictionary size or configuration: {'; '.join(wrong)}")
    for name, have in targets.items():
        have.copy_(state[name])
