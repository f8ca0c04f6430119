"""Benchmark `vitsae trace`'s graph building on a ViT-B-shaped random model: time and peak memory.

A random HookedViT of ViT-B's shape (D=768, 12 heads, MLP 3072, 224x224 in patches of 16: 197 tokens) with
random TopK SAEs (F=24,576, k=32) at the residual stream after `--sae-blocks`. The graph keeps `--nodes`
features per SAE and `--top-k` sources per node; `--confirm` edges are ablated; the faithfulness curve
is off unless `--faithfulness`. Beside it, the baseline: one plain forward + backward of the model alone
over the same images, and what a dense nodes x nodes edge matrix over every feature would take.

    .venv/bin/python scripts/bench_circuits.py                      # the size that fits 2 shared cores
    .venv/bin/python scripts/bench_circuits.py --images 64 --layers 12 --sae-blocks 2 5 8 11  # the issue's
"""

from __future__ import annotations

import argparse
import resource
from pathlib import Path

import torch
from benchtools import timed

from vitsae.circuits.columns import make_columns
from vitsae.circuits.config import TraceConfig
from vitsae.circuits.files import write_graph
from vitsae.circuits.graph import build_graph
from vitsae.circuits.target import Target
from vitsae.data.loader import ImageBatch
from vitsae.data.preprocess import Preprocess
from vitsae.edit.splice import SpliceSite
from vitsae.models import HookedViT, HookedViTConfig
from vitsae.sae.config import SAEConfig
from vitsae.sae.model import SparseAutoencoder


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--sae-blocks", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--expansion", type=int, default=32)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--confirm", type=int, default=2)
    parser.add_argument("--faithfulness", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_circuits"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = HookedViTConfig(
        d_model=768,
        n_layers=args.layers,
        n_heads=12,
        d_mlp=3072,
        image_size=(224, 224),
        patch_size=16,
        head_out=1000,
    )
    model = HookedViT(cfg, Preprocess(size=(224, 224)))
    model.init_weights()
    model.eval()
    sites = []
    for block in args.sae_blocks:
        hook = f"blocks.{block}.hook_resid_post"
        sae_cfg = SAEConfig(
            d_in=768, expansion_factor=args.expansion, architecture="topk", k=32, hook_name=hook
        )
        sites.append(
            SpliceSite(SparseAutoencoder(sae_cfg, generator=torch.Generator().manual_seed(block)).eval())
        )
    columns = make_columns(model, sites, [s.sae.cfg.hook_name for s in sites])
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(args.images, 3, 224, 224, generator=generator)
    batches_list = [
        ImageBatch(
            pixels[i : i + args.batch_size],
            torch.arange(i, min(i + args.batch_size, args.images)),
            torch.zeros(len(pixels[i : i + args.batch_size]), dtype=torch.long),
            [],
        )
        for i in range(0, args.images, args.batch_size)
    ]
    trace = TraceConfig(
        model="random",
        sae=("-",) * len(sites),
        source="random",
        target="class:0",
        out=args.out,
        images=args.images,
        batch_size=args.batch_size,
        nodes=args.nodes,
        top_k=args.top_k,
        confirm=args.confirm,
        faithfulness=args.faithfulness,
        progress=False,
    )

    def plain_pass() -> None:
        for batch in batches_list:
            model(batch.pixels_BCHW).logsumexp(1).sum().backward()

    _, plain, plain_cpu = timed(plain_pass)
    model.zero_grad(set_to_none=True)
    rss_plain = peak_rss_gib()
    (record, tensors), graph_s, graph_cpu = timed(
        lambda: build_graph(model, columns, Target("class", 0), lambda: iter(batches_list), trace)
    )
    write_graph(args.out, record, tensors)
    graph_bytes = sum(p.stat().st_size for p in args.out.iterdir())
    n_features = sum(c.n_features for c in columns)
    dense_bytes = n_features**2 * 4
    print(
        f"ViT-B-shaped random model: {args.layers} blocks, D=768, 197 tokens, {args.images} images, "
        f"SAEs at blocks {args.sae_blocks} (F={768 * args.expansion:,} each), "
        f"{torch.get_num_threads()} threads"
    )
    print(f"{'run':<44} {'wall s':>9} {'CPU s':>9} {'peak RSS GiB':>13} {'output MiB':>11}")
    print(
        f"{'baseline: plain forward+backward':<44} {plain:>9.1f} {plain_cpu:>9.1f} {rss_plain:>13.2f} "
        f"{'-':>11}"
    )
    print(
        f"{'graph (nodes, edges, ablations)':<44} {graph_s:>9.1f} {graph_cpu:>9.1f} {peak_rss_gib():>13.2f} "
        f"{graph_bytes / 2**20:>11.2f}"
    )
    print(
        f"{'baseline: dense nodes x nodes float32 edges':<44} {'-':>9} {'-':>9} {'-':>13} "
        f"{dense_bytes / 2**20:>11.0f}"
    )
    print(
        f"graph / plain: {graph_s / plain:.1f}x wall, {graph_cpu / plain_cpu:.1f}x CPU; "
        f"{len(record['nodes'])} nodes, "
        f"{len(record['edges'])} edges"
    )


if __name__ == "__main__":
    main()
