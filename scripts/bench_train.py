"""Benchmark SAE training on CPU: throughput and reconstruction at a matched L0, per architecture.

Each architecture trains alone through `vitsae.train.Trainer` (the real loop: schedules, dead-feature
tracking, logging, one checkpoint at the end) on the same batches; the first of `--runs` (by default the
ReLU-L1 SAE) is the baseline the relative speed is measured against. ReLU and JumpReLU train with
`--target-l0` (the penalty coefficient steered to the target L0); TopK/BatchTopK use k = target L0.
FVU, L0 and dead fraction are measured afterwards with `vitsae.eval.evaluate_sae` on rows held out from
training (synthetic data) or on a sample of the store's rows (in-sample; stated in the header).

    .venv/bin/python scripts/bench_train.py                       # synthetic activations
    .venv/bin/python scripts/bench_train.py --store runs/store/blocks.3.hook_resid_post
    .venv/bin/python scripts/bench_train.py --runs topk:dense,topk:sparse --d-model 768 \
        --expansion-factor 16 --target-l0 32     # TopK on the dense vs the sparse backend
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from vitsae.eval import evaluate_sae
from vitsae.sae import ARCHITECTURES, load_sae
from vitsae.sae.config import BACKENDS
from vitsae.train import TensorBatches, TrainConfig, Trainer
from vitsae.train.data import StoreBatches
from vitsae.train.synthetic import sparse_dictionary_data

DEFAULT_RUNS = (
    ("relu", "dense"),
    ("topk", "dense"),
    ("topk", "sparse"),
    ("batchtopk", "dense"),
    ("jumprelu", "dense"),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", help="activation store folder (default: synthetic activations)")
    parser.add_argument("--tokens", type=int, default=1 << 18, help="training rows per SAE")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--expansion-factor", type=int, default=8)
    parser.add_argument("--target-l0", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=64, help="synthetic width")
    parser.add_argument("--eval-rows", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--runs",
        default=",".join(f"{a}:{b}" for a, b in DEFAULT_RUNS),
        help="architecture:backend pairs to train, comma-separated; the first is the speed baseline",
    )
    parser.add_argument("--dead-handling", default="auxk", choices=("none", "resample", "auxk"))
    args = parser.parse_args()
    args.runs = [tuple(pair.split(":")) for pair in args.runs.split(",")]
    for pair in args.runs:
        if len(pair) != 2 or pair[0] not in ARCHITECTURES or pair[1] not in BACKENDS:
            parser.error(
                f"--runs: {':'.join(pair)!r} is not architecture:backend with an architecture in "
                f"{list(ARCHITECTURES)} and a backend in {list(BACKENDS)}"
            )
    return args


def data(args):
    """(training source, held-out rows in SAE units, norm_scale, description)."""
    if args.store:
        source = StoreBatches(args.store, args.batch_size)
        rows = torch.randperm(len(source.reader), generator=torch.Generator().manual_seed(1))[
            : args.eval_rows
        ]
        eval_ND = source.reader[rows.sort().values] * source.norm_scale
        return source, eval_ND, source.norm_scale, f"store {args.store} ({source.hook_name}, in-sample eval)"
    n_atoms, active = 8 * args.d_model, args.target_l0 / 2
    acts, _ = sparse_dictionary_data(
        args.tokens + args.eval_rows, d=args.d_model, n_atoms=n_atoms, active=active, noise=0.05, seed=0
    )
    train, held_out = acts[: args.tokens], acts[args.tokens :]
    scale = args.d_model**0.5 / float(train.norm(dim=-1).mean())
    what = f"synthetic: {n_atoms} atoms in {args.d_model}-D, ~{active:g} active per row, held-out eval"
    return TensorBatches(train, args.batch_size), held_out * scale, scale, what


def config(args, architecture: str, **kw) -> TrainConfig:
    values = dict(
        architecture=architecture,
        expansion_factor=(args.expansion_factor,),
        k=(args.target_l0,),
        lr=(2e-3,),
        batch_size=args.batch_size,
        total_tokens=args.tokens,
        lr_warmup_steps=20,
        dead_handling=args.dead_handling,
        dead_tokens=args.tokens // 4,
        log_every=50,
        checkpoint_every=10**9,
        progress=False,
        plot=False,
    )
    return TrainConfig(**{**values, **kw})


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    source, eval_ND, scale, what = data(args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        settings = {"topk": f"k={args.target_l0}", "batchtopk": f"k={args.target_l0}"}
        settings |= {"relu": f"target L0 {args.target_l0}", "jumprelu": f"target L0 {args.target_l0}"}
        plans = []
        for architecture, backend in args.runs:
            kw = {"backend": backend}
            if architecture in ("relu", "jumprelu"):
                kw["target_l0"] = (float(args.target_l0),)
            plans.append((architecture, backend, settings[architecture], kw))
        warm_up = dict(plans[0][3], total_tokens=2 * args.batch_size)  # one-time costs off the first row
        Trainer(config(args, plans[0][0], **warm_up), source, tmp / "warm_up", norm_scale=scale).fit()
        for index, (architecture, backend, knob, kw) in enumerate(plans):
            out = tmp / f"{index}_{architecture}_{backend}"
            started = time.perf_counter()
            ((name, _),) = (
                Trainer(config(args, architecture, **kw), source, out, norm_scale=scale).fit().items()
            )
            seconds = time.perf_counter() - started
            metrics = evaluate_sae(load_sae(out / name), eval_ND.split(args.batch_size), normalized=True)
            rows.append((architecture, backend, knob, args.tokens / seconds, metrics))
    base = rows[0][3]
    print(f"# SAE training, {what}")
    print(
        f"# D={eval_ND.shape[1]}, F={args.expansion_factor}x, {args.tokens} tokens, batch {args.batch_size}, "
        f"target L0 {args.target_l0}, dead handling {args.dead_handling}; torch {torch.__version__}, "
        f"{args.threads} threads, {platform.machine()}"
    )
    print(f"# speed relative to the first row ({rows[0][0]} {rows[0][1]})")
    print(
        f"{'architecture':<11} {'backend':<7} {'setting':<16} {'tokens/s':>10} {'vs base':>8} "
        f"{'L0':>7} {'FVU':>7} {'never fired':>11}"
    )
    for architecture, backend, knob, speed, m in rows:
        print(
            f"{architecture:<11} {backend:<7} {knob:<16} {speed:>10,.0f} {speed / base:>7.2f}x "
            f"{m['l0']:>7.2f} {m['fvu']:>7.4f} {m['never_fired_fraction']:>11.3f}"
        )


if __name__ == "__main__":
    main()
