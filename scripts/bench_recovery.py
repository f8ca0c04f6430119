"""Benchmark: does each architecture, with its defaults, recover a known dictionary?

Synthetic rows from `vitsae.train.synthetic.KnownDictionary` (random unit atoms, Zipf frequencies,
log-normal magnitudes, optional co-firing pairs, Gaussian noise), streamed so every training row is fresh.
Per setting, each architecture trains through the real `Trainer` with defaults only: TopK and BatchTopK get
k = the true mean L0, ReLU and JumpReLU get --target-l0 = the true mean L0; nothing else is set (learning
rate, warm-up, decay, dead window: derived from the run size). Measured on held-out rows with
`vitsae.eval.evaluate_sae`: FVU, L0, features never firing; from the trainer's last record: dead over the
last window, rare (< 1 in 10^5), duplicate features (decoder cosine > 0.9), tokens/s; against the true
dictionary: MMCS both ways and the fraction of true atoms recovered at cosine > 0.9. The baseline rows: a
random dictionary of the same size (what MMCS gives for nothing), and three FVU yardsticks from the true
dictionary (`reference_rows`: the noise floor, the best k-sparse code, the true atoms as a tied TopK SAE).

    nice .venv/bin/python scripts/bench_recovery.py                         # every setting, 3M tokens
    nice .venv/bin/python scripts/bench_recovery.py --settings x8-l8 --archs topk,relu
    nice .venv/bin/python scripts/bench_recovery.py --settings x8-l8 --archs relu --set dictionary_init=data
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import tempfile
import time
import typing
from pathlib import Path

import torch

from vitsae.eval import evaluate_sae
from vitsae.eval.metrics import reconstruction_metrics
from vitsae.train import TrainConfig, Trainer
from vitsae.train.synthetic import KnownDictionary, largest_codes, recovery_scores, tied_topk_codes

# name: (generator, SAE expansion factor over the width)
SETTINGS: dict[str, tuple[KnownDictionary, int]] = {
    "x8-l8": (KnownDictionary(d=128, n_atoms=1024, active=8.0), 16),
    "x4-l4-pairs": (KnownDictionary(d=128, n_atoms=512, active=4.0, pair_cofire=0.5, seed=1), 8),
    "x16-l32-heavy": (KnownDictionary(d=64, n_atoms=1024, active=32.0, sigma=1.0, seed=2), 32),
}
ARCHS = ("topk", "batchtopk", "relu", "jumprelu")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated: {list(SETTINGS)}")
    parser.add_argument("--archs", default=",".join(ARCHS), help="comma-separated architectures")
    parser.add_argument("--tokens", type=int, default=3_000_000, help="training rows per SAE")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--held-out", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="TrainConfig field=value (a variant)")
    return parser.parse_args()


def overrides(pairs: list[str]) -> dict:
    """`--set field=value` pairs as TrainConfig keyword arguments (numbers, tuples of numbers, strings)."""
    hints = typing.get_type_hints(TrainConfig)
    out: dict = {}
    for pair in pairs:
        name, value = pair.split("=", 1)
        text = str(hints[name])
        cast = float if "float" in text else int if "int" in text else str
        out[name] = tuple(cast(v) for v in value.split(",")) if "tuple" in text else cast(value)
    return out


def run_one(setting: str, arch: str, args, extra: dict, tmp: Path) -> dict:
    source, expansion = SETTINGS[setting]
    source = dataclasses.replace(source, batch_size=args.batch_size)  # not __dict__: it caches the atoms
    held_ND, codes_NA = source.held_out(args.held_out)
    true_l0 = float((codes_NA != 0).sum(-1).double().mean())
    knob = {"k": (round(true_l0),)} if arch in ("topk", "batchtopk") else {"target_l0": (round(true_l0, 1),)}
    cfg = TrainConfig(
        architecture=arch,
        expansion_factor=(expansion,),
        batch_size=args.batch_size,
        total_tokens=args.tokens,
        checkpoint_every=10**9,
        progress=False,
        plot=False,
        **knob,
        **extra,
    )
    started = time.perf_counter()
    trainer = Trainer(cfg, source, tmp / f"{setting}_{arch}")
    ((name, summary),) = trainer.fit().items()
    seconds = time.perf_counter() - started
    (run,) = trainer.runs
    final = summary["final_metrics"]
    metrics = evaluate_sae(run.sae, (held_ND * trainer.norm_scale).split(args.batch_size), normalized=True)
    scores = recovery_scores(run.sae.W_dec.detach(), source.dictionary_AD)
    return dict(
        setting=setting,
        arch=arch,
        knob=next(f"{k}={v[0]:g}" for k, v in knob.items()),
        true_l0=true_l0,
        lr=summary["lr"],
        fvu=metrics["fvu"],
        l0=metrics["l0"],
        never=metrics["never_fired_fraction"],
        dead=final["dead_fraction"],
        rare=final["rare_fraction"],
        dup=final["duplicate_fraction"],
        tok_s=args.tokens / seconds,
        **scores,
    )


def random_row(setting: str) -> dict:
    source, expansion = SETTINGS[setting]
    rows = torch.randn(expansion * source.d, source.d, generator=torch.Generator().manual_seed(5))
    scores = recovery_scores(rows, source.dictionary_AD)
    nan = float("nan")
    return dict(setting=setting, arch="random dict.", knob="-", true_l0=nan, lr=nan, fvu=nan, l0=nan,
                never=nan, dead=nan, rare=nan, dup=nan, tok_s=nan, **scores)  # fmt: skip


def reference_rows(setting: str, n_rows: int) -> list[dict]:
    """FVU yardsticks from the true dictionary on the held-out rows: the noise floor (the true codes), the
    best k-sparse code (each row's k largest true codes, k = the true mean L0, what a fixed-k SAE with a
    perfect encoder reaches), and the true atoms as a tied TopK SAE (encoder = decoder, codes scaled by
    the least-squares factor: a perfect dictionary behind a plain linear encoder)."""
    source, _ = SETTINGS[setting]
    held_ND, codes_NA = source.held_out(n_rows)
    atoms_AD = source.dictionary_AD
    true_l0 = float((codes_NA != 0).sum(-1).double().mean())
    k = round(true_l0)
    nan = float("nan")
    rows = []
    references = {
        "true codes (noise floor)": codes_NA,
        f"true atoms, {k} largest true codes": largest_codes(codes_NA, k),
        f"true atoms, tied TopK k={k}": tied_topk_codes(held_ND, atoms_AD, k),
    }
    for name, codes in references.items():
        metrics = reconstruction_metrics(held_ND, codes @ atoms_AD, codes)
        rows.append(dict(setting=setting, arch=name, knob="-", true_l0=true_l0, lr=nan, fvu=metrics["fvu"],
                         l0=metrics["l0"], never=nan, dead=nan, rare=nan, dup=nan, tok_s=nan,
                         **recovery_scores(atoms_AD, atoms_AD)))  # fmt: skip
    return rows


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    extra = overrides(args.set)
    print(
        f"# bench_recovery: {args.tokens:,} tokens per SAE, batch {args.batch_size}, "
        f"held-out {args.held_out}, variant {extra or 'defaults'}; torch {torch.__version__}, "
        f"{args.threads} thread(s), "
        f"{platform.machine()}",
        flush=True,
    )
    header = (
        "| setting | arch | knob | lr | FVU | L0 | dead (window) | rare | never fired (held-out) | dup | "
        "MMCS true->learned | MMCS learned->true | recovered@0.9 | tokens/s |"
    )
    print(header)
    print("|---|---|---|" + "---:|" * 11)
    with tempfile.TemporaryDirectory() as tmp:
        for setting in args.settings.split(","):
            for row in (random_row(setting), *reference_rows(setting, args.held_out)):
                print(fmt(row), flush=True)
            for arch in args.archs.split(","):
                print(fmt(run_one(setting, arch, args, extra, Path(tmp))), flush=True)


def fmt(r: dict) -> str:
    def f(v, spec):
        return "-" if v is None or v != v else format(v, spec)

    return (
        f"| {r['setting']} (true L0 {f(r['true_l0'], '.1f')}) | {r['arch']} | {r['knob']} "
        f"| {f(r['lr'], '.2g')} "
        f"| {f(r['fvu'], '.3f')} | {f(r['l0'], '.1f')} | {f(r['dead'], '.3f')} | {f(r['rare'], '.3f')} "
        f"| {f(r['never'], '.3f')} | {f(r['dup'], '.3f')} | {r['mmcs_true_to_learned']:.3f} "
        f"| {r['mmcs_learned_to_true']:.3f} | {r['recovered']:.3f} | {f(r['tok_s'], ',.0f')} |"
    )


if __name__ == "__main__":
    main()
