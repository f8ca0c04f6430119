"""Stage breakdown of the sparse TopK step, for the GPU check (the kernel review's section 5).

Times each stage of the Triton path on its own, beside the cuBLAS/PyTorch operation it replaces:
the encoder kernel in each precision against `x @ W` (fp32, TF32, bf16), the candidate merge against
`torch.topk` of dense pre-activations, `encode_select` end to end (with its agreement with a dense top-k
in the same precision), the decode gather, grad x's gather over a row-major W_enc^T, `gather_dot`,
`scatter_outer` on uniform and on skewed codes (feature 0 in every row), and ReLU at initialisation
(widest row, encoder launches). Then what Triton compiled: registers, spills and the MMA instructions in
each kernel's PTX. Writes a JSON file; prints a table.

    python3 scripts/gpu_probe_kernels.py --json $OUT/probe.json                  # GPU, production sizes
    TRITON_INTERPRET=1 python3 scripts/gpu_probe_kernels.py --dry --json x.json  # CPU, tiny, interpreted
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

import torch

from vitsae.kernels import selection, triton_kernels, triton_ops


def best_seconds(fn, device: torch.device, repeats: int) -> float:
    times = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return min(times)


def probe(B: int, D: int, F: int, k: int, device: torch.device, repeats: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    W_dec = (torch.randn(F, D, generator=gen) / D**0.5).to(device)
    W_enc = W_dec.T.contiguous()  # row-major [D, F], as the SAE stores it
    x = torch.randn(B, D, generator=gen).to(device)
    bias = torch.zeros(F, device=device)
    out: dict[str, float | int | str] = {}

    def timed(name, fn):
        out[f"{name} ms"] = 1e3 * best_seconds(fn, device, repeats)

    kc = triton_ops.candidates_per_block(k, F, triton_ops.BLOCKS["encode_f"])
    precisions = ("float32", "tf32", "bfloat16") if device.type == "cuda" else ("float32",)
    for precision in precisions:
        xk, Wk, dot = triton_ops._operands(x, W_enc, precision)
        timed(
            f"encode kernel {precision}",
            lambda a=(xk, Wk, dot): triton_ops._launch_encode(*a, bias, None, None, 2, 1, kc),
        )
    for name, dtype, tf32 in (
        ("fp32", torch.float32, False),
        ("tf32", torch.float32, True),
        ("bf16", torch.bfloat16, False),
    ):
        if device.type != "cuda" and name != "fp32":
            continue
        torch.backends.cuda.matmul.allow_tf32 = tf32
        xd, Wd = x.to(dtype), W_enc.to(dtype)
        timed(f"x@W torch {name}", lambda a=xd, b=Wd: a @ b)
    torch.backends.cuda.matmul.allow_tf32 = False
    xk, Wk, dot = triton_ops._operands(x, W_enc, "bfloat16" if device.type == "cuda" else "float32")
    idx, val, *_ = triton_ops._launch_encode(xk, Wk, dot, bias, None, None, 2, 1, kc)
    timed("merge candidates", lambda: selection.merge_topk_candidates(val, idx, k))
    pre = triton_ops.dense_pre(x, W_enc, bias, "bfloat16" if device.type == "cuda" else "float32")
    timed("torch.topk of dense pre", lambda: torch.topk(pre, k, dim=1))
    precision = "bfloat16" if device.type == "cuda" else "float32"
    args = (x, W_enc, bias, torch.zeros(D, device=device), "topk", k, None, None, precision)
    timed("encode_select", lambda: triton_ops.encode_select(*args))
    indices, values, counts, *_ = triton_ops.encode_select(*args)
    want = torch.topk(pre, k, dim=1).indices.sort(dim=1).values
    got = indices.long().sort(dim=1).values
    out["encode index sets equal to dense top-k"] = float((got == want).all(dim=1).double().mean())
    timed(
        "gather_rows_sum W_dec (decode)", lambda: triton_ops.gather_rows_sum(indices, values, counts, W_dec)
    )
    timed(
        "gather_rows_sum W_enc.T (grad x)",
        lambda: triton_ops.gather_rows_sum(indices, values, counts, W_enc.T),
    )
    timed("gather_dot", lambda: triton_ops.gather_dot(indices, counts, x, W_dec))
    timed("scatter_outer uniform", lambda: triton_ops.scatter_outer(indices, values, counts, x, F))
    skewed = indices.clone()
    skewed[:, -1] = 0  # feature 0 in every row (a dense latent): one segment of B entries (for timing
    skewed[(indices[:, :-1] == 0).any(dim=1), -1] = 1  # only: a row may now name feature 1 twice)
    timed("scatter_outer skewed", lambda: triton_ops.scatter_outer(skewed, values, counts, x, F))
    out["skewed / uniform scatter_outer"] = out["scatter_outer skewed ms"] / out["scatter_outer uniform ms"]
    launches = []
    real = triton_ops._launch_encode
    triton_ops._launch_encode = lambda *a: launches.append(a[-2]) or real(*a)
    triton_ops._relu_width.clear()
    relu_args = (x, W_enc, bias, torch.zeros(D, device=device), "relu", None, None, None, precision)
    start = time.perf_counter()
    relu_idx, *_ = triton_ops.encode_select(*relu_args)
    out["relu at init: first call (with compiles) ms"] = 1e3 * (time.perf_counter() - start)
    out["relu at init: widest row"] = relu_idx.shape[1]
    out["relu at init: encoder launches (max_k)"] = str(launches)
    timed("relu at init: later call", lambda: triton_ops.encode_select(*relu_args))
    triton_ops._launch_encode = real
    return out


def compiled_info() -> dict[str, list[dict]]:
    """Registers, spills and MMA instructions of every compiled variant (Triton's JIT cache; the layout
    of that cache changes between Triton versions, so anything unexpected is reported, not raised)."""
    info: dict[str, list[dict]] = {}
    for name in ("encode_kernel", "gather_rows_kernel", "gather_dot_kernel", "segment_outer_kernel"):
        kernel = getattr(triton_kernels, name)
        caches = getattr(kernel, "device_caches", None)
        if caches is None:
            info[name] = [{"note": "not compiled (interpreted, or an unknown Triton cache layout)"}]
            continue
        rows = []
        try:
            for entry in caches.values():
                for compiled in (entry[0] if isinstance(entry, tuple) else entry).values():
                    ptx = compiled.asm.get("ptx", "")
                    rows.append(
                        {
                            "regs": getattr(compiled, "n_regs", None),
                            "spills": getattr(compiled, "n_spills", None),
                            "wgmma": len(re.findall(r"wgmma\.mma_async", ptx)),
                            "mma.sync": len(re.findall(r"\bmma\.sync", ptx)),
                            "fma": len(re.findall(r"\bfma\.rn\.f32", ptx)),
                        }
                    )
        except (AttributeError, TypeError, KeyError) as error:  # another Triton's cache layout
            rows.append({"note": f"cache not readable: {error!r}"})
        info[name] = rows
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry", action="store_true", help="tiny sizes on CPU (kernels interpreted)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    device = torch.device("cpu" if args.dry else "cuda")
    B, D, F, k = (64, 32, 512, 8) if args.dry else (4096, 768, 24576, 32)
    repeats = 1 if args.dry else args.repeats
    stages = probe(B, D, F, k, device, repeats)
    compiled = compiled_info()
    print(f"TopK stages at B={B} D={D} F={F} k={k} on {device} (best of {repeats}):")
    print("| stage | value |\n|---|---|")
    for name, value in stages.items():
        print(f"| {name} | {f'{value:.4g}' if isinstance(value, float) else value} |")
    print("\n| kernel | variants: regs / spills / wgmma / mma.sync / fma |\n|---|---|")
    for name, rows in compiled.items():
        print(f"| {name} | {'; '.join(' / '.join(str(v) for v in r.values()) for r in rows)} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"shape": [B, D, F, k], "stages": stages, "compiled": compiled}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
