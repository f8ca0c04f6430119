"""Stacked weight access for circuit work: every layer's weights as one tensor with a leading layer axis.

Shapes (L layers, H heads, D d_model, E d_head, M d_mlp): `W_Q/W_K/W_V` [L, H, D, E], `W_O` [L, H, E, D],
`b_Q/b_K/b_V` [L, H, E], `b_O` [L, D], `W_in` [L, D, M], `b_in` [L, M], `W_out` [L, M, D], `b_out` [L, D],
`ln1_w/ln1_b/ln2_w/ln2_b` [L, D]. A query is `ln1(resid) @ W_Q[l] + b_Q[l]` per head; a layer writes
`ls1 * (z @ W_O + b_O)` to the residual stream (`ls1` = 1 without layer scale). The head is `W_U`
[pooled_width, head_out] with `b_U` on the HookedViT itself. A gated MLP's `W_gate`/`b_gate` are on
each `blocks[l].mlp`.
"""

from __future__ import annotations

import torch

_ATTN = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")
_MLP = ("W_in", "b_in", "W_out", "b_out")
_NORMS = {"ln1_w": ("ln1", "w"), "ln1_b": ("ln1", "b"), "ln2_w": ("ln2", "w"), "ln2_b": ("ln2", "b")}


def _stacked(path: tuple[str, str]):
    def get(self) -> torch.Tensor:
        return torch.stack([getattr(getattr(block, path[0]), path[1]) for block in self.blocks])

    get.__doc__ = f"{path[0]}.{path[1]} of every layer, stacked on a leading layer axis."
    return property(get)


class StackedWeights:
    """Mixin for a model with `blocks` (each with attn, mlp, ln1, ln2) giving stacked weight properties."""

    def layer_scales(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(ls1, ls2) [L, D]; ones when the model has no layer scale."""
        ones = [torch.ones_like(block.ln1.w) for block in self.blocks]
        ls1 = [ones[i] if b.ls1 is None else b.ls1 for i, b in enumerate(self.blocks)]
        ls2 = [ones[i] if b.ls2 is None else b.ls2 for i, b in enumerate(self.blocks)]
        return torch.stack(ls1), torch.stack(ls2)

    def QK(self, layer: int) -> torch.Tensor:
        """Per-head query-key bilinear form [H, D, D] (before the 1/sqrt(E) scale, biases left out)."""
        attn = self.blocks[layer].attn
        return attn.W_Q @ attn.W_K.transpose(1, 2)

    def OV(self, layer: int) -> torch.Tensor:
        """Per-head map [H, D, D] from the normalised residual of a source token to what the head writes."""
        attn = self.blocks[layer].attn
        return attn.W_V @ attn.W_O


for _name in _ATTN:
    setattr(StackedWeights, _name, _stacked(("attn", _name)))
for _name in _MLP:
    setattr(StackedWeights, _name, _stacked(("mlp", _name)))
for _name, _path in _NORMS.items():
    setattr(StackedWeights, _name, _stacked(_path))
