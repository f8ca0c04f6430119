"""End-to-end step of scripts/gpu_check.sh: `vitsae train` on synthetic activations, dense vs sparse.

Writes a synthetic activations file (sparse combinations of a random dictionary, float32), then trains the
same TopK SAE twice through the real CLI, `--backend dense` and `--backend sparse`, each in its own
process with a wall-clock budget (a run still going when its budget ends is stopped; its logged metrics
count). Compares tokens/s (the trainer's own, from each run's last metrics record, so start-up is
excluded) and FVU and L0 at the last step both runs logged; they must agree within `--fvu-tol` (absolute,
plus 10% of the dense value) and `--l0-tol` (relative). Prints a table, writes `train_check.json`.

    python3 scripts/gpu_check_train.py --out $OUT/train --device cuda               # the GPU check
    python3 scripts/gpu_check_train.py --out /tmp/t --device cpu --dry              # tiny, on CPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

FULL = {
    "d": 768,
    "expansion": 32,
    "k": 32,
    "batch": 4096,
    "rows": 131_072,
    "tokens": 4096 * 2000,
    "budget": 55,
}
DRY = {"d": 32, "expansion": 8, "k": 8, "batch": 256, "rows": 4096, "tokens": 256 * 12, "budget": 60}


def synthetic_activations(
    n: int, d: int, n_atoms: int, active: int, device: str, seed: int = 0
) -> torch.Tensor:
    """[n, d] float32 rows, each a positive combination of `active` random unit atoms plus 1% noise."""
    gen = torch.Generator(device=device).manual_seed(seed)
    atoms_AD = torch.randn(n_atoms, d, generator=gen, device=device)
    atoms_AD /= atoms_AD.norm(dim=1, keepdim=True)
    pick_NS = torch.randint(0, n_atoms, (n, active), generator=gen, device=device)
    coef_NS = 0.5 + torch.rand(n, active, generator=gen, device=device)
    acts = torch.einsum("ns,nsd->nd", coef_NS, atoms_AD[pick_NS])
    return (acts + 0.01 * torch.randn(n, d, generator=gen, device=device)).cpu()


def run_train(args, sizes: dict, data: Path, backend: str) -> dict:
    out = Path(args.out) / backend
    log_every = max(1, sizes["tokens"] // sizes["batch"] // 40)
    cmd = [
        sys.executable, "-m", "vitsae.cli", "train",
        "--activations", str(data), "--out", str(out), "--architecture", "topk",
        "--k", str(sizes["k"]), "--expansion-factor", str(sizes["expansion"]),
        "--batch-size", str(sizes["batch"]), "--total-tokens", str(sizes["tokens"]),
        "--backend", backend, "--device", args.device, "--log-every", str(log_every),
        "--checkpoint-every", str(10**9), "--no-progress", "--no-plot", "--seed", "0",
    ]  # fmt: skip
    start = time.perf_counter()
    with open(Path(args.out) / f"{backend}.log", "w") as log:
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=sizes["budget"]).returncode
        except subprocess.TimeoutExpired:
            rc = "stopped at the budget"
    records = [
        json.loads(line) for path in out.glob("**/metrics.jsonl") for line in path.read_text().splitlines()
    ]
    return {"rc": rc, "wall_s": time.perf_counter() - start, "records": records}


def compare(runs: dict, fvu_tol: float, l0_tol: float) -> dict:
    """Tokens/s of each run and FVU/L0 at the last step both logged; `agree` says whether they match."""
    steps = [{r["step"]: r for r in run["records"]} for run in runs.values()]
    common = sorted(set(steps[0]) & set(steps[1]))
    result = {name: {"rc": run["rc"], "wall_s": run["wall_s"]} for name, run in runs.items()}
    for name, run in runs.items():
        if run["records"]:
            result[name]["tokens_per_s"] = run["records"][-1]["tokens_per_s"]
            result[name]["last_step"] = run["records"][-1]["step"]
    if not common:
        return result | {"agree": False, "why": "no step logged by both runs"}
    at = common[-1]
    d, s = steps[0][at], steps[1][at]
    fvu_ok = abs(d["fvu"] - s["fvu"]) <= fvu_tol + 0.1 * abs(d["fvu"])
    l0_ok = abs(d["l0"] - s["l0"]) <= l0_tol * max(abs(d["l0"]), 1.0)
    for name, rec in (("dense", d), ("sparse", s)):
        result[name].update(fvu=rec["fvu"], l0=rec["l0"])
    return result | {"compared_at_step": at, "agree": bool(fvu_ok and l0_ok)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dry", action="store_true", help="tiny sizes (a CPU run of the same steps)")
    parser.add_argument("--budget-s", type=float, help="wall-clock budget per training run")
    parser.add_argument("--fvu-tol", type=float, default=0.02)
    parser.add_argument("--l0-tol", type=float, default=0.05)
    args = parser.parse_args()
    sizes = dict(DRY if args.dry else FULL)
    if args.budget_s:
        sizes["budget"] = args.budget_s
    Path(args.out).mkdir(parents=True, exist_ok=True)
    data = Path(args.out) / "activations.safetensors"
    gen_device = args.device if args.device != "auto" else "cpu"
    acts = synthetic_activations(sizes["rows"], sizes["d"], 4 * sizes["d"], 8, gen_device)
    save_file({"activations": acts.contiguous()}, str(data))
    runs = {backend: run_train(args, sizes, data, backend) for backend in ("dense", "sparse")}
    result = compare(runs, args.fvu_tol, args.l0_tol) | {"sizes": sizes, "device": args.device}
    data.unlink()
    (Path(args.out) / "train_check.json").write_text(json.dumps(result, indent=1))
    print(
        f"TopK SAE d={sizes['d']} F={sizes['d'] * sizes['expansion']} k={sizes['k']} B={sizes['batch']}, "
        f"{args.device}; compared at step {result.get('compared_at_step')}"
    )
    print("| backend | exit | wall s | last step | tokens/s | FVU | L0 |")
    print("|---|---|---|---|---|---|---|")
    for name in ("dense", "sparse"):
        r = result[name]
        tokens_per_s, fvu, l0 = (r.get(n, float("nan")) for n in ("tokens_per_s", "fvu", "l0"))
        print(
            f"| {name} | {r['rc']} | {r['wall_s']:.0f} | {r.get('last_step')} | {tokens_per_s:,.0f} | "
            f"{fvu:.4f} | {l0:.2f} |"
        )
    print(
        "dense and sparse agree" if result["agree"] else f"DISAGREE: {result.get('why', 'FVU or L0 differ')}"
    )
    return 0 if result["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
