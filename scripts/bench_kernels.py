"""Benchmark one SAE training step: dense PyTorch against the sparse/fused path of vitsae.kernels.

A step is encode (TopK), decode, MSE loss, backward to W_enc, b_enc, W_dec and b_dec (the input needs no
gradient); its time is the best of --repeats runs after one warm-up (the least disturbed by other load).
Each (configuration, path) runs in a fresh subprocess so its peak memory is its own: on CUDA
torch.cuda.max_memory_allocated, on CPU the peak RSS growth over the RSS after the tensors were made.
The floor is a roofline bound from this machine's own measured matmul rate and copy bandwidth
(docs/benchmarks.md explains it). The density sweep compares both paths as K / F grows; the crossover
sets vitsae.kernels.sparse_torch.DENSE_DENSITY_THRESHOLD.

    .venv/bin/python scripts/bench_kernels.py --threads 2            # CPU table and density sweep
    .venv/bin/python scripts/bench_kernels.py --device cuda          # GPU table (needs CUDA)
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

CPU_CONFIGS = [  # (B, D, F, K)
    (4096, 128, 2048, 8),
    (1024, 768, 12288, 32),
]
GPU_CONFIGS = [(4096, 768, 24576, k) for k in (32, 64, 128)]
SWEEP = (1024, 256, 4096, (16, 64, 128, 192, 256, 512, 1024))  # B, D, F, K values


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _tensors(B: int, D: int, F: int, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    W_dec = torch.randn(F, D, generator=gen) / D**0.5
    params = {
        "W_enc": W_dec.T.clone(),
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


def sparse_step(t: dict[str, torch.Tensor], k: int) -> None:
    """vitsae.kernels: fused/sparse encode and decode (Triton on CUDA, CSR products on CPU)."""
    enc = api.encode(t["x"], t["W_enc"], t["b_enc"], t["b_dec"], activation="topk", k=k, backend="sparse")
    x_hat = api.decode(enc.codes, t["W_dec"], t["b_dec"], backend="sparse")
    ((x_hat - t["x"].to(x_hat.dtype)) ** 2).sum(dim=1).mean().backward()


def run_worker(spec: dict) -> dict:
    """One (configuration, path) measurement, in this (fresh) process."""
    device = torch.device(spec["device"])
    torch.set_num_threads(spec["threads"])
    if spec["path"] == "calibrate":
        return calibrate(device)
    # The sweep measures each path as it is: the sparse products must not switch to dense themselves.
    sparse_torch.DENSE_DENSITY_THRESHOLD = float("inf")
    B, D, F, K = spec["B"], spec["D"], spec["F"], spec["K"]
    t = _tensors(B, D, F, device, getattr(torch, spec["dtype"]))
    step = dense_step if spec["path"] == "dense" else sparse_step
    _sync(device)
    base_rss = _rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    times = []
    for i in range(spec["repeats"] + 1):
        for p in ("W_enc", "b_enc", "W_dec", "b_dec"):
            t[p].grad = None
        _sync(device)
        start = time.perf_counter()
        step(t, K)
        _sync(device)
        if i:  # the first run is warm-up
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base_cuda
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss
    return {"seconds": min(times), "peak_bytes": max(peak, 0)}


def calibrate(device: torch.device) -> dict:
    """This machine's fp32 matmul rate (flop/s) and copy bandwidth (bytes/s, read + write)."""
    a = torch.randn(2048, 2048, device=device)
    src = torch.empty(32 * 2**20, device=device)
    rates, bws = [], []
    for _ in range(4):
        _sync(device)
        start = time.perf_counter()
        a @ a
        _sync(device)
        rates.append(2 * 2048**3 / (time.perf_counter() - start))
        start = time.perf_counter()
        src.clone()
        _sync(device)
        bws.append(2 * src.numel() * 4 / (time.perf_counter() - start))
    return {"flops": max(rates), "bandwidth": max(bws)}


def floor_seconds(path: str, B: int, D: int, F: int, K: int, x_bytes: int, rate: dict) -> float:
    """Roofline floor of one step: max(flops / matmul rate, bytes / bandwidth) of the path's minimum work.

    dense: 5 B x D x F matmuls (encode, decode, grad codes, grad W_dec, grad W_enc) and the B x F
    pre-activations, codes and their two gradients written and read once each.
    sparse: the encoder matmul (2BDF) plus 4 gathers/scatters of K rows (8BKD), with no B x F tensor in
    memory beyond the encoder's tile. Both read x, both weight matrices and write both weight gradients.
    """
    common = B * D * x_bytes + 4 * D * F * 4
    if path == "dense":
        flops = 10 * B * D * F
        moved = common + 4 * 2 * B * F * 4
    else:
        flops = 2 * B * D * F + 8 * B * K * D
        moved = common + B * K * 8 * 3
    return max(flops / rate["flops"], moved / rate["bandwidth"])


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
    base = {"device": args.device, "threads": args.threads, "repeats": args.repeats, "dtype": dtype}
    rate = spawn({**base, "path": "calibrate"})
    print(
        f"device {args.device}, {args.threads} threads, x {dtype}; measured matmul "
        f"{rate['flops'] / 1e9:.1f} GFLOP/s, copy {rate['bandwidth'] / 1e9:.1f} GB/s"
    )
    configs = GPU_CONFIGS if args.device == "cuda" else CPU_CONFIGS
    print("\n| B | D | F | K | path | step ms | tokens/s | peak MiB | floor ms | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for B, D, F, K in configs:
        results = {p: spawn({**base, "path": p, "B": B, "D": D, "F": F, "K": K}) for p in ("dense", "sparse")}
        for path, res in results.items():
            seconds = res["seconds"]
            floor = floor_seconds(path, B, D, F, K, x_bytes, rate)
            speedup = results["dense"]["seconds"] / seconds
            print(
                f"| {B} | {D} | {F} | {K} | {path} | {seconds * 1e3:.1f} | {B / seconds:,.0f} | "
                f"{res['peak_bytes'] / 2**20:.0f} | {floor * 1e3:.1f} | {speedup:.2f}x |"
            )
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
