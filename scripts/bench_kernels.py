"""Benchmark one SAE training step: dense PyTorch against the sparse/fused path of vitsae.kernels.

A step is encode (TopK), decode, MSE loss, backward to W_enc, b_enc, W_dec and b_dec (the input needs no
gradient); its time is the best of --repeats runs after one warm-up (the least disturbed by other load).
Each (configuration, path) runs in a fresh subprocess so its peak memory is its own: on CUDA
torch.cuda.max_memory_allocated, on CPU the peak RSS growth over the RSS after the tensors were made.
The floor is a roofline bound from this machine's own measured matmul rates and copy bandwidth
(docs/benchmarks.md explains it). The density sweep compares both paths as K / F grows; the crossover
sets vitsae.kernels.sparse_torch.DENSE_DENSITY_THRESHOLD.

Paths: `dense` (plain PyTorch, x in --dtype), `sparse` (vitsae.kernels, x in --dtype, column-major
W_enc), `sparse-train` (what training runs: float32 x, row-major W_enc, the default encoder precision,
bf16 on CUDA), `sparse-fp32` (the same with the float32 FMA encoder, the path training took before).
Sparse rows also time the decode alone against its byte floor, and count host syncs and ATen calls of
one step (`vitsae.kernels.host_syncs`).

    .venv/bin/python scripts/bench_kernels.py --threads 2            # CPU table and density sweep
    .venv/bin/python scripts/bench_kernels.py --device cuda          # GPU table (needs CUDA)
    TRITON_INTERPRET=1 .venv/bin/python scripts/bench_kernels.py --force-triton --shapes 64,32,256,8 \
        --no-sweep --repeats 1                                  # the Triton path, interpreted (dry run)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from vitsae.kernels import api, reference, sparse_torch
from vitsae.kernels.host_syncs import HostSyncCounter

CPU_CONFIGS = [  # (B, D, F, K)
    (4096, 128, 2048, 8),
    (1024, 768, 12288, 32),
]
GPU_CONFIGS = [(4096, 768, 24576, k) for k in (32, 64, 128)]
SWEEP = (1024, 256, 4096, (16, 64, 128, 192, 256, 512, 1024))  # B, D, F, K values
PATHS = ("dense", "sparse", "sparse-train", "sparse-fp32")
# path -> (x dtype: None = --dtype, W_enc row-major, encoder precision)
SPARSE_PATHS = {
    "sparse": (None, False, "auto"),
    "sparse-train": ("float32", True, "auto"),
    "sparse-fp32": ("float32", True, "float32"),
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _tensors(
    B: int, D: int, F: int, device: torch.device, dtype: torch.dtype, row_major: bool = False
) -> dict[str, torch.Tensor]:
    """Weights as the SAE makes them (W_enc = W_dec^T; row-major [D, F] when `row_major`, as the SAE
    stores it, else the transposed view's column-major strides) and a batch x in `dtype`."""
    gen = torch.Generator().manual_seed(0)
    W_dec = torch.randn(F, D, generator=gen) / D**0.5
    params = {
        "W_enc": W_dec.T.contiguous() if row_major else W_dec.T.clone(),
        "b_enc": torch.zeros(F),
        "b_dec": torch.zeros(D),
        "W_dec": W_dec,
    }
    out = {n: p.to(device).requires_grad_() for n, p in params.items()}
    out["x"] = torch.randn(B, D, generator=gen).to(device, dtype)
    return out


def dense_step(t: dict[str, torch.Tensor], k: int) -> None:
    """Plain PyTorch: B x F pre-activations, dense TopK codes, dense matmuls both ways."""
    pre_BF = reference.pre_activations(t["x"], t["W_enc"], t["b_enc"], t["b_dec"])
    codes_BF = reference.activate(pre_BF, "topk", k)
    x_hat = reference.decode(codes_BF, t["W_dec"], t["b_dec"])
    ((x_hat - t["x"].to(x_hat.dtype)) ** 2).sum(dim=1).mean().backward()


def sparse_step(t: dict[str, torch.Tensor], k: int, precision: str = "auto") -> None:
    """vitsae.kernels: fused/sparse encode and decode (Triton on CUDA, CSR products on CPU)."""
    enc = api.encode(
        t["x"],
        t["W_enc"],
        t["b_enc"],
        t["b_dec"],
        activation="topk",
        k=k,
        backend="sparse",
        precision=precision,
    )
    x_hat = api.decode(enc.codes, t["W_dec"], t["b_dec"], backend="sparse")
    ((x_hat - t["x"].to(x_hat.dtype)) ** 2).sum(dim=1).mean().backward()


def _best_time(fn, device: torch.device, repeats: int, before=lambda: None) -> float:
    times = []
    for i in range(repeats + 1):
        before()
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        if i:  # the first run is warm-up
            times.append(time.perf_counter() - start)
    return min(times)


def run_worker(spec: dict) -> dict:
    """One (configuration, path) measurement, in this (fresh) process."""
    device = torch.device(spec["device"])
    torch.set_num_threads(spec["threads"])
    if spec["path"] == "calibrate":
        return calibrate(device)
    # The sweep measures each path as it is: the sparse products must not switch to dense themselves.
    sparse_torch.DENSE_DENSITY_THRESHOLD = float("inf")
    if spec.get("force_triton"):  # the Triton kernels on any device (interpreted on CPU: a dry run)
        from vitsae.kernels import triton_ops

        api.sparse_ops = lambda _device: triton_ops
    B, D, F, K = spec["B"], spec["D"], spec["F"], spec["K"]
    path = spec["path"]
    x_dtype, row_major, precision = SPARSE_PATHS.get(path, (None, False, "auto"))
    t = _tensors(B, D, F, device, getattr(torch, x_dtype or spec["dtype"]), row_major)

    def step() -> None:
        if path == "dense":
            dense_step(t, K)
        else:
            sparse_step(t, K, precision)

    def clear_grads() -> None:
        for p in ("W_enc", "b_enc", "W_dec", "b_dec"):
            t[p].grad = None

    _sync(device)
    base_rss = _rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    seconds = _best_time(step, device, spec["repeats"], clear_grads)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base_cuda
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss
    out = {"seconds": seconds, "peak_bytes": max(peak, 0)}
    if path != "dense":
        clear_grads()
        with HostSyncCounter() as counter:
            step()
        out.update(syncs=counter.n_syncs, aten_calls=counter.ops)
        with torch.no_grad():
            codes = api.encode(
                t["x"], t["W_enc"], t["b_enc"], t["b_dec"], activation="topk", k=K, precision=precision
            ).codes
            out["decode_seconds"] = _best_time(
                lambda: api.decode(codes, t["W_dec"], t["b_dec"], backend="sparse"), device, spec["repeats"]
            )
    return out


def calibrate(device: torch.device) -> dict:
    """This machine's matmul rates (flop/s; fp32 with TF32 off, and bf16 on CUDA) and copy bandwidth
    (bytes/s, read + write)."""
    n = 2048 if device.type == "cpu" else 8192
    src = torch.empty(32 * 2**20 if device.type == "cpu" else 256 * 2**20, device=device)
    torch.backends.cuda.matmul.allow_tf32 = False
    dtypes = {"flops": torch.float32} | ({"flops_bf16": torch.bfloat16} if device.type == "cuda" else {})
    out = {}
    for name, dtype in dtypes.items():
        a = torch.randn(n, n, device=device, dtype=dtype)
        out[name] = 2 * n**3 / _best_time(lambda a=a: a @ a, device, 3)
    out.setdefault("flops_bf16", out["flops"])
    out["bandwidth"] = 2 * src.numel() * 4 / _best_time(src.clone, device, 3)
    return out


def floor_seconds(path: str, B: int, D: int, F: int, K: int, x_bytes: int, rate: dict) -> float:
    """Roofline floor of one step: max(flops / matmul rate, bytes / bandwidth) of the path's minimum work.

    dense: 5 B x D x F matmuls (encode, decode, grad codes, grad W_dec, grad W_enc) and the B x F
    pre-activations, codes and their two gradients written and read once each.
    sparse: the encoder matmul (2BDF, at the bf16 rate where it runs in bf16) plus 4 gathers/scatters of
    K rows (8BKD), with no B x F tensor in memory beyond the encoder's tile. Both read x, both weight
    matrices and write both weight gradients.
    """
    common = B * D * x_bytes + 4 * D * F * 4
    if path == "dense":
        return max(10 * B * D * F / rate["flops"], (common + 4 * 2 * B * F * 4) / rate["bandwidth"])
    half = path != "sparse-fp32" and rate.get("encoder_half", False)
    enc_rate = rate["flops_bf16"] if half else rate["flops"]
    flop_time = 2 * B * D * F / enc_rate + 8 * B * K * D / rate["flops"]
    return max(flop_time, (common + B * K * 8 * 3) / rate["bandwidth"])


def decode_floor_seconds(B: int, D: int, F: int, K: int, rate: dict) -> float:
    """Byte floor of the sparse decode: read the codes (8 bytes a slot) and each decoder row in use once
    (at most F), write x_hat in float32."""
    return (B * K * 8 + min(F, B * K) * D * 4 + B * D * 4) / rate["bandwidth"]


def parse_shapes(text: str) -> list[tuple[int, int, int, int]]:
    """ "B,D,F,K;B,D,F,K" -> [(B, D, F, K), ...]."""
    try:
        shapes = [tuple(int(v) for v in part.split(",")) for part in text.split(";") if part.strip()]
    except ValueError:
        shapes = []
    if not shapes or any(len(s) != 4 for s in shapes):
        raise SystemExit(f"--shapes wants B,D,F,K[;B,D,F,K...], got {text!r}")
    return shapes


def spawn(spec: dict) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {spec} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", help="input dtype (default float32 on CPU, bfloat16 on CUDA)")
    parser.add_argument("--no-sweep", action="store_true", help="skip the density sweep")
    parser.add_argument("--shapes", help="B,D,F,K;... instead of the device's default configurations")
    parser.add_argument(
        "--paths",
        help=f"comma-separated subset of {','.join(PATHS)} (default: all on CUDA, dense,sparse on CPU)",
    )
    parser.add_argument("--force-triton", action="store_true", help="the Triton kernels on any device")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available: the GPU configurations need a GPU.", file=sys.stderr)
        return 2
    dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    x_bytes = torch.empty(0, dtype=getattr(torch, dtype)).element_size()
    base = {
        "device": args.device,
        "threads": args.threads,
        "repeats": args.repeats,
        "dtype": dtype,
        "force_triton": args.force_triton,
    }
    rate = spawn({**base, "path": "calibrate"})
    rate["encoder_half"] = args.device == "cuda"  # the "auto" encoder precision: bf16 on CUDA only
    print(
        f"device {args.device}, {args.threads} threads, x {dtype}; measured matmul fp32 "
        f"{rate['flops'] / 1e9:.1f} GFLOP/s, bf16 {rate['flops_bf16'] / 1e9:.1f} GFLOP/s, "
        f"copy {rate['bandwidth'] / 1e9:.1f} GB/s"
    )
    configs = (
        parse_shapes(args.shapes) if args.shapes else GPU_CONFIGS if args.device == "cuda" else CPU_CONFIGS
    )
    default_paths = PATHS if args.device == "cuda" else ("dense", "sparse")
    paths = args.paths.split(",") if args.paths else list(default_paths)
    if "dense" not in paths or any(p not in PATHS for p in paths):
        raise SystemExit(f"--paths must include dense (the baseline) and name only {', '.join(PATHS)}")
    print(
        "\n| B | D | F | K | path | step ms | tokens/s | peak MiB | floor ms | x floor | speed-up "
        "| decode ms | decode floor ms | syncs | ATen calls |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for B, D, F, K in configs:
        results = {p: spawn({**base, "path": p, "B": B, "D": D, "F": F, "K": K}) for p in paths}
        for path, res in results.items():
            seconds = res["seconds"]
            floor = floor_seconds(path, B, D, F, K, x_bytes, rate)
            speedup = results["dense"]["seconds"] / seconds
            decode = res.get("decode_seconds")
            dec_floor = decode_floor_seconds(B, D, F, K, rate)
            rows.append(
                {
                    "B": B,
                    "D": D,
                    "F": F,
                    "K": K,
                    "path": path,
                    **res,
                    "floor_seconds": floor,
                    "speedup": speedup,
                }
                | ({"decode_floor_seconds": dec_floor} if decode is not None else {})
            )
            dec_cols = (
                "| | | | "
                if decode is None
                else (f"| {decode * 1e3:.2f} | {dec_floor * 1e3:.2f} | {res['syncs']} | {res['aten_calls']} ")
            )
            print(
                f"| {B} | {D} | {F} | {K} | {path} | {seconds * 1e3:.1f} | {B / seconds:,.0f} | "
                f"{res['peak_bytes'] / 2**20:.0f} | {floor * 1e3:.1f} | {seconds / floor:.1f} | "
                f"{speedup:.2f}x {dec_cols}|"
            )
        if args.json:  # after every configuration, so a run stopped at a time limit keeps what it measured
            with open(args.json, "w") as f:
                json.dump({"rate": rate, "dtype": dtype, "device": args.device, "rows": rows}, f, indent=1)
    if args.no_sweep or args.device == "cuda":
        return 0
    B, D, F, ks = SWEEP
    print(f"\ndensity sweep (B={B}, D={D}, F={F}): step time, dense / sparse")
    print("| K | K/F | dense ms | sparse ms | dense/sparse |")
    print("|---|---|---|---|---|")
    ratios = []
    for K in ks:
        res = {p: spawn({**base, "path": p, "B": B, "D": D, "F": F, "K": K}) for p in ("dense", "sparse")}
        ratios.append(res["dense"]["seconds"] / res["sparse"]["seconds"])
        print(
            f"| {K} | {K / F:.3f} | {res['dense']['seconds'] * 1e3:.1f} | "
            f"{res['sparse']['seconds'] * 1e3:.1f} | {ratios[-1]:.2f} |"
        )
    print(f"\ncrossover: {crossover_density([k / F for k in ks], ratios)}")
    return 0


def crossover_density(densities: list[float], ratios: list[float]) -> str:
    """The density from which dense wins at every denser sweep point (dense/sparse <= 1), interpolated
    linearly between the last point where sparse won and the next; a noisy dip below 1 further down is
    ignored because sparse wins again after it."""
    if ratios[-1] > 1:
        return "none in the sweep (sparse wins at every density)"
    last_win = max((i for i, r in enumerate(ratios) if r > 1), default=None)
    if last_win is None:
        return "below the sweep (dense wins at every density)"
    d0, d1, r0, r1 = densities[last_win], densities[last_win + 1], ratios[last_win], ratios[last_win + 1]
    return f"K/F = {d0 + (r0 - 1) * (d1 - d0) / (r0 - r1):.3f}"


if __name__ == "__main__":
    sys.exit(main())
