"""Index maths of the sparse encoders: exact top-k from per-block candidates, and packing of active sets.

Order is by value descending, ties by feature index ascending, everywhere (so the blockwise path and a
full-row top-k pick the same features even on ties). The Triton encoder emits per-block candidates and
`merge_topk_candidates` turns them into the exact top-k; the same functions are the CPU reference.
"""

from __future__ import annotations

import torch

from vitsae.kernels.codes import used_slots


def _order_desc(values_BC: torch.Tensor, indices_BC: torch.Tensor) -> torch.Tensor:
    """Column permutation sorting each row by value descending, then index ascending."""
    by_index = torch.argsort(indices_BC, dim=1, stable=True)
    values_sorted = values_BC.gather(1, by_index)
    by_value = torch.argsort(values_sorted, dim=1, descending=True, stable=True)
    return by_index.gather(1, by_value)


def topk_rows(values_BF: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest entries of each row (ties: lower feature index first), sorted; k <= F."""
    indices_BF = torch.arange(values_BF.shape[1], device=values_BF.device).expand_as(values_BF)
    order_BF = _order_desc(values_BF, indices_BF)[:, :k]
    return values_BF.gather(1, order_BF), order_BF


def blockwise_topk_candidates(
    values_BF: torch.Tensor, k: int, block_f: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per F-block top-min(k, block) candidates of each row, as the encoder kernel writes them.

    Returns (values_BC, indices_BC) with C = n_blocks * min(k, block_f); the padding of a ragged last block
    holds -inf so it is never chosen while a real entry remains.
    """
    B, F = values_BF.shape
    n_blocks = -(-F // block_f)
    per_block = min(k, block_f)
    padded = values_BF.new_full((B, n_blocks * block_f), float("-inf"))
    padded[:, :F] = values_BF
    blocks_BNb = padded.reshape(B * n_blocks, block_f)
    top_vals, top_local = topk_rows(blocks_BNb, per_block)
    offsets = (torch.arange(n_blocks, device=values_BF.device) * block_f).repeat(B)[:, None]
    top_idx = (top_local + offsets).clamp(max=F - 1)
    return top_vals.reshape(B, -1), top_idx.reshape(B, -1)


def order_key(values_BC: torch.Tensor, indices_BC: torch.Tensor) -> torch.Tensor:
    """int64 keys ordering float32 values descending, ties by index ascending, in one comparison:
    the value's bits made monotone (negative floats' magnitude bits flipped; -0 taken as +0) in the
    high half, 2**31 - 1 - index in the low half. NaN sorts above +inf, as in torch.topk."""
    bits = (values_BC + 0.0).view(torch.int32).long()
    monotone = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return monotone * 2**32 + (2**31 - 1 - indices_BC.long())


def merge_topk_candidates(
    values_BC: torch.Tensor, indices_BC: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact top-k of each row from its candidates (value desc, index asc); k <= C.

    Exact when each of a row's global top-k is a candidate. float32 candidates (what the kernels write)
    take one `torch.topk` over `order_key` instead of two full stable sorts.
    """
    if values_BC.dtype == torch.float32:
        order_BC = torch.topk(order_key(values_BC, indices_BC), k, dim=1).indices
    else:
        order_BC = _order_desc(values_BC, indices_BC)[:, :k]
    return values_BC.gather(1, order_BC), indices_BC.gather(1, order_BC)


def pack_active(values_BF: torch.Tensor, active_BF: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """All active entries of each row, largest first: (indices_BK int32, values_BK, counts_B int32).

    Uses `torch.topk` (ties in any order: every active entry is kept, so the set is exact). K is the
    widest row's count (at least 1); unused slots hold index 0 and value 0.
    """
    counts_B = active_BF.sum(dim=1)
    width = max(int(counts_B.max()) if counts_B.numel() else 0, 1)
    key_BF = torch.where(active_BF, values_BF, float("-inf"))
    top_BK, idx_BK = torch.topk(key_BF, min(width, values_BF.shape[1]), dim=1)
    return finish_codes(top_BK, idx_BK, counts_B)


def pack_topk(values_BK: torch.Tensor, indices_BK: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """TopK codes from sorted top-k pre-activations: ReLU applied, the non-positive tail made unused."""
    counts_B = (values_BK > 0).sum(dim=1)
    return finish_codes(values_BK, indices_BK, counts_B)


def finish_codes(
    vals_BK: torch.Tensor, idx_BK: torch.Tensor, counts_B: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Sorted slots to codes: the first counts_B[b] slots kept, the rest index 0 and value 0."""
    used_BK = used_slots(counts_B, vals_BK.shape[1])
    indices_BK = torch.where(used_BK, idx_BK, 0).to(torch.int32)
    values_BK = torch.where(used_BK, vals_BK, 0)
    return indices_BK, values_BK, counts_B.to(torch.int32)


def batch_topk_mask(pre_BF: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the k * B largest pre-activations of the batch that are also positive."""
    flat = pre_BF.reshape(-1)
    n = min(k * pre_BF.shape[0], flat.numel())
    _, idx = torch.topk(flat, n)
    mask = torch.zeros_like(flat, dtype=torch.bool).index_fill_(0, idx, True)
    return mask.reshape(pre_BF.shape) & (pre_BF > 0)
