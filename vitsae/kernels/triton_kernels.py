"""Triton kernels of the sparse SAE step. Imported only through `triton_ops`, on first use.

- `encode_kernel`: a tiled x W_enc matmul (fp32 accumulation) whose epilogue adds the folded bias
  b_enc - b_dec W_enc and applies the activation without writing the B x F pre-activations:
  ReLU/JumpReLU append each row's active features to its slots (one atomic per row and block hands out
  the slot range), write the row's weighted-L1 partial for this block and add the block's firing counts;
  TopK writes each row's top-KC candidates of this block (KC rounds of one fused max/argmax, ties to
  the lower index; KC is small and independent of F), merged and checked for exactness afterwards.
  DOT picks the matmul: 0 fp32 FMA ("ieee"), 1 TF32 tensor cores, 2 half-precision (bf16/fp16)
  operands; all three accumulate in fp32.
- `gather_rows_kernel`: out[b] = sum_k coef[b, k] rows[idx[b, k]] (decode; grad x = d_pre W_enc^T).
- `gather_dot_kernel`: out[b, k] = <dense[b], rows[idx[b, k]]> (grad of the code values).
- `segment_outer_kernel`: out[f] = sum over entries of feature f of coef * dense[row] with the entries
  sorted by feature, so each feature's sum has one fixed order (deterministic, no float atomics); a
  program walks a group of features in step, vectorised across the group. Features with more entries
  than a bound are left to a dense matmul by the caller (their range is passed empty), so no program
  walks a long segment one entry at a time.

Every offset that grows with B (rows * width, entry numbers) is computed in int64: B x F and B x K
exceed 2**31 at sizes users train at.
"""

import triton
import triton.language as tl


@triton.jit
def encode_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    thr_ptr,
    l1w_ptr,
    idx_ptr,
    val_ptr,
    count_ptr,
    l1_part_ptr,
    fire_ptr,
    B,
    D,
    F,
    stride_xb,
    stride_xd,
    stride_wd,
    stride_wf,
    MAX_K,
    MODE: tl.constexpr,
    KC: tl.constexpr,
    HAS_L1: tl.constexpr,
    DOT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """MODE 0: ReLU, 1: JumpReLU (threshold per feature), 2: TopK candidates (KC per block).
    MAX_K (the ReLU slot width) is a runtime argument, so a new width does not recompile."""
    pid_b = tl.program_id(0)
    pid_f = tl.program_id(1)
    rows = pid_b.to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = pid_f * BLOCK_F + tl.arange(0, BLOCK_F)
    row_ok = rows < B
    col_ok = cols < F
    acc = tl.zeros((BLOCK_B, BLOCK_F), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_ok = ds < D
        x_tile = tl.load(
            x_ptr + rows[:, None] * stride_xb + ds[None, :] * stride_xd,
            mask=row_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        w_tile = tl.load(
            w_ptr + ds[:, None] * stride_wd + cols[None, :] * stride_wf,
            mask=d_ok[:, None] & col_ok[None, :],
            other=0.0,
        )
        if DOT == 2:
            acc += tl.dot(x_tile, w_tile.to(x_tile.dtype))
        elif DOT == 1:
            acc += tl.dot(x_tile.to(tl.float32), w_tile.to(tl.float32), input_precision="tf32")
        else:
            acc += tl.dot(x_tile.to(tl.float32), w_tile.to(tl.float32), input_precision="ieee")
    pre = acc + tl.load(bias_ptr + cols, mask=col_ok, other=0.0)[None, :]
    valid = row_ok[:, None] & col_ok[None, :]
    if MODE == 2:
        local = tl.arange(0, BLOCK_F)
        work = tl.where(valid, pre, float("-inf"))
        for i in range(KC):
            best, best_col = tl.max(work, axis=1, return_indices=True, return_indices_tie_break_left=True)
            slot = rows * (tl.num_programs(1) * KC) + pid_f * KC + i
            tl.store(val_ptr + slot, best, mask=row_ok)
            tl.store(idx_ptr + slot, pid_f * BLOCK_F + best_col, mask=row_ok)
            work = tl.where(local[None, :] == best_col[:, None], float("-inf"), work)
    else:
        if MODE == 1:
            thr = tl.load(thr_ptr + cols, mask=col_ok, other=0.0)
            active = valid & (pre > thr[None, :])
        else:
            active = valid & (pre > 0.0)
        active_i = active.to(tl.int32)
        pos = tl.cumsum(active_i, axis=1) - 1
        row_total = tl.sum(active_i, axis=1)
        base = tl.atomic_add(count_ptr + rows, row_total, mask=row_ok)
        slot = base[:, None] + pos
        keep = active & (slot < MAX_K)
        out_off = rows[:, None] * MAX_K + slot
        tl.store(idx_ptr + out_off, cols[None, :] + tl.zeros((BLOCK_B, BLOCK_F), dtype=tl.int32), mask=keep)
        tl.store(val_ptr + out_off, pre, mask=keep)
        tl.atomic_add(fire_ptr + cols, tl.sum(active_i, axis=0), mask=col_ok)
        if HAS_L1:
            l1w = tl.load(l1w_ptr + cols, mask=col_ok, other=0.0)
            part = tl.sum(tl.where(active, tl.abs(pre) * l1w[None, :], 0.0), axis=1)
            tl.store(l1_part_ptr + rows * tl.num_programs(1) + pid_f, part, mask=row_ok)


@triton.jit
def gather_rows_kernel(
    idx_ptr,
    coef_ptr,
    count_ptr,
    rows_ptr,
    out_ptr,
    B,
    D,
    K,
    stride_rf,
    stride_rd,
    BLOCK_B: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    rows = pid_b.to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    ds = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < B
    d_ok = ds < D
    counts = tl.load(count_ptr + rows, mask=row_ok, other=0)
    acc = tl.zeros((BLOCK_B, BLOCK_D), dtype=tl.float32)
    for k in range(K):
        used = row_ok & (k < counts)
        feat = tl.load(idx_ptr + rows * K + k, mask=used, other=0).to(tl.int64)
        coef = tl.load(coef_ptr + rows * K + k, mask=used, other=0.0).to(tl.float32)
        w = tl.load(
            rows_ptr + feat[:, None] * stride_rf + ds[None, :] * stride_rd,
            mask=used[:, None] & d_ok[None, :],
            other=0.0,
        )
        acc += coef[:, None] * w.to(tl.float32)
    tl.store(out_ptr + rows[:, None] * D + ds[None, :], acc, mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def gather_dot_kernel(
    idx_ptr,
    count_ptr,
    dense_ptr,
    rows_ptr,
    out_ptr,
    B,
    D,
    K,
    stride_rf,
    stride_rd,
    BLOCK_E: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """One program per BLOCK_E (row, slot) entries of the flattened B x K codes."""
    es = tl.program_id(0).to(tl.int64) * BLOCK_E + tl.arange(0, BLOCK_E)
    rows = es // K
    e_ok = es < B * K
    used = e_ok & ((es % K) < tl.load(count_ptr + rows, mask=e_ok, other=0))
    feat = tl.load(idx_ptr + es, mask=used, other=0).to(tl.int64)
    acc = tl.zeros((BLOCK_E,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        m = used[:, None] & (ds < D)[None, :]
        g = tl.load(dense_ptr + rows[:, None] * D + ds[None, :], mask=m, other=0.0)
        w = tl.load(rows_ptr + feat[:, None] * stride_rf + ds[None, :] * stride_rd, mask=m, other=0.0)
        acc += tl.sum(g.to(tl.float32) * w.to(tl.float32), axis=1)
    tl.store(out_ptr + es, acc, mask=e_ok)


@triton.jit
def segment_outer_kernel(
    start_ptr,
    end_ptr,
    entry_row_ptr,
    entry_coef_ptr,
    dense_ptr,
    out_ptr,
    sums_ptr,
    F,
    D,
    stride_of,
    stride_od,
    BLOCK_FS: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """BLOCK_FS features per program; step e adds each feature's e-th entry (its own fixed order).
    Feature f's entries are start[f]:end[f] (int64) of the feature-sorted entry arrays."""
    fs = tl.program_id(0) * BLOCK_FS + tl.arange(0, BLOCK_FS)
    pid_d = tl.program_id(1)
    ds = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    f_ok = fs < F
    d_ok = ds < D
    start = tl.load(start_ptr + fs, mask=f_ok, other=0)
    length = (tl.load(end_ptr + fs, mask=f_ok, other=0) - start).to(tl.int32)  # short: heavy ones are 0
    acc = tl.zeros((BLOCK_FS, BLOCK_D), dtype=tl.float32)
    total = tl.zeros((BLOCK_FS,), dtype=tl.float32)
    for e in range(0, tl.max(length, axis=0)):
        e_ok = f_ok & (e < length)
        row = tl.load(entry_row_ptr + start + e, mask=e_ok, other=0).to(tl.int64)
        coef = tl.load(entry_coef_ptr + start + e, mask=e_ok, other=0.0).to(tl.float32)
        tile = tl.load(
            dense_ptr + row[:, None] * D + ds[None, :], mask=e_ok[:, None] & d_ok[None, :], other=0.0
        )
        acc += coef[:, None] * tile.to(tl.float32)
        total += coef
    tl.store(
        out_ptr + fs[:, None] * stride_of + ds[None, :] * stride_od, acc, mask=f_ok[:, None] & d_ok[None, :]
    )
    if pid_d == 0:
        tl.store(sums_ptr + fs, total, mask=f_ok)
