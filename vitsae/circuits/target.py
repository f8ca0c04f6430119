"""What a circuit explains: a class logit or one SAE feature, and how a feature is summed over its tokens.

A node's scalar is its activation summed over the tokens of an image (`aggregate="sum"`), or over its `top_r`
most active tokens of that image (`aggregate="top"`; the tokens are chosen on the unedited forward and kept
when the same images run edited, so an ablation measures the same scalar the gradient was taken of).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from vitsae.errors import VitsaeError


class CircuitError(VitsaeError):
    """Inputs a circuit cannot be traced with (SAEs out of order, an unknown target, another model's SAE)."""


@dataclass(frozen=True)
class Target:
    """A class logit (`kind="class"`, `index` the class) or feature `index` of the SAE at `hook`."""

    kind: Literal["class", "feature"]
    index: int
    hook: str = ""
    label: str = ""

    @property
    def key(self) -> str:
        """The node id of this target in a graph: `logit:<class>` or `<hook>:<feature>`."""
        return f"logit:{self.index}" if self.kind == "class" else f"{self.hook}:{self.index}"

    def scalar(
        self,
        logits_BC: torch.Tensor,
        codes: dict[str, torch.Tensor],
        aggregate: str,
        top_r: int,
        chosen_BR: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per image [B]: the logit, or the feature aggregated over its tokens; and the tokens chosen."""
        if self.kind == "class":
            return logits_BC[:, self.index], None
        return aggregate_tokens(codes[self.hook][:, :, self.index], aggregate, top_r, chosen_BR)


def aggregate_tokens(
    acts_BT: torch.Tensor, aggregate: str, top_r: int, chosen_BR: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sum over all tokens, or over the `top_r` largest per image (`chosen_BR` when given)."""
    if aggregate == "sum":
        return acts_BT.sum(1), None
    if chosen_BR is None:
        chosen_BR = acts_BT.detach().topk(min(top_r, acts_BT.shape[1]), dim=1).indices
    return acts_BT.gather(1, chosen_BR).sum(1), chosen_BR
