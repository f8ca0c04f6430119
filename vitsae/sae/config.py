"""The SAE's configuration: architecture, widths, initialisation and where its training data came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from vitsae.config import check_choices
from vitsae.errors import InvalidValue
from vitsae.kernels.api import Backend, resolve_backend

Architecture = Literal["relu", "topk", "batchtopk", "jumprelu"]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
BACKENDS: tuple[str, ...] = get_args(Backend)
BDecInit = Literal["geometric_median", "mean", "zeros"]
UNIT_NORM_DECODER: frozenset[str] = frozenset({"topk", "batchtopk", "jumprelu"})


@dataclass(frozen=True)
class SAEConfig:
    """One sparse autoencoder: x_hat = W_dec f(W_enc (x - b_dec) + b_enc) + b_dec."""

    d_in: int = field(metadata={"help": "activation width D"})
    expansion_factor: int = field(default=8, metadata={"help": "dictionary size F = expansion_factor * D"})
    architecture: Architecture = field(default="relu", metadata={"help": "activation function f"})
    k: int = field(default=32, metadata={"help": "active features per row (topk) or on average (batchtopk)"})
    jumprelu_bandwidth: float = field(
        default=0.05, metadata={"help": "rectangle-kernel width of the JumpReLU straight-through estimator"}
    )
    jumprelu_init_threshold: float = field(default=0.1, metadata={"help": "initial JumpReLU threshold"})
    batchtopk_threshold_momentum: float = field(
        default=0.01, metadata={"help": "EMA rate of the BatchTopK inference threshold"}
    )
    decoder_init_norm: float | None = field(
        default=None,
        metadata={"help": "initial decoder row norm (default: 0.1 for relu, 1 for unit-norm decoders)"},
    )
    b_dec_init: BDecInit = field(
        default="geometric_median", metadata={"help": "how b_dec is set from a sample of activations"}
    )
    backend: Backend = field(
        default="auto", metadata={"help": "encode/decode path: dense matmuls, sparse codes, or auto"}
    )
    hook_name: str = field(default="", metadata={"help": "hook point the activations came from"})
    model_spec: str = field(default="", metadata={"help": "model spec string of the harvested model"})
    model_weights_hash: str = field(
        default="", metadata={"help": "sha256 of the harvested model's weights (from the store's manifest)"}
    )
    store: str = field(default="", metadata={"help": "activation store the SAE was trained on"})
    norm_scale: float | None = field(
        default=None,
        metadata={"help": "raw activations times norm_scale give the SAE's (normalised) input"},
    )

    def __post_init__(self) -> None:
        check_choices(self)
        if self.d_in <= 0 or self.expansion_factor <= 0:
            raise InvalidValue(
                f"d_in ({self.d_in}) and expansion_factor ({self.expansion_factor}) must be > 0"
            )
        if self.architecture in ("topk", "batchtopk") and not 0 < self.k <= self.d_sae:
            raise InvalidValue(f"k must be in [1, d_sae={self.d_sae}], got {self.k}")

    @property
    def resolved_backend(self) -> Literal["dense", "sparse"]:
        """The path this SAE's `forward` takes: `backend`, with "auto" dense unless the SAE is TopK with
        codes sparse enough for the sparse kernels to win (`vitsae.kernels.resolve_backend`)."""
        if self.backend != "auto":
            return self.backend
        if self.architecture != "topk":
            return "dense"
        return resolve_backend("auto", "topk", self.k, self.d_sae)

    def trains_sparse(self, training: bool, world_size: int) -> bool:
        """Whether a training forward pass runs through the sparse kernels (no B x F gradient).

        TopK and ReLU always can; BatchTopK only in one process in training mode (the kernels select the
        top k * B of the local rows, not the cut-off over every rank's rows); JumpReLU never (its
        threshold's straight-through gradient needs pre-activations just below the threshold, which codes
        do not hold).
        """
        if self.resolved_backend != "sparse":
            return False
        if self.architecture == "batchtopk":
            return training and world_size == 1
        return self.architecture in ("topk", "relu")

    @property
    def d_sae(self) -> int:
        """Dictionary size F."""
        return self.expansion_factor * self.d_in

    @property
    def unit_norm_decoder(self) -> bool:
        """Whether training keeps decoder rows at unit norm (else the L1 term is weighted by row norms)."""
        return self.architecture in UNIT_NORM_DECODER

    @property
    def initial_decoder_norm(self) -> float:
        if self.decoder_init_norm is not None:
            return self.decoder_init_norm
        return 1.0 if self.unit_norm_decoder else 0.1
