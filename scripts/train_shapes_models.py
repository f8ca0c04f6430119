"""Train the shipped shapes models from scratch, deterministically on CPU: checkpoints/shapes-{vit,cnn}.

- shapes-vit: a HookedViT (4 layers, width 96, a convolutional stem of stride 8 on 64x64: an 8x8 token
  grid, no CLS token, mean-pooled head) in the native format (`hooked_vit.json` + `model.safetensors`).
- shapes-cnn: a transformers ResNetForImageClassification with a small config, `save_pretrained` in
  safetensors with a `preprocessor_config.json`.

Both train on fresh images of the shapes dataset (training seed) and are scored on a held-out seed; each
directory gets a `card.json` (accuracy, seeds, command, wall time, parameters) and `train_config.json`.

    .venv/bin/python scripts/train_shapes_models.py --model vit
    .venv/bin/python scripts/train_shapes_models.py --model cnn
"""

from __future__ import annotations

import argparse
import math
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vitsae.config import add_config_arguments, config_from_args, config_to_dict, save_config
from vitsae.data.preprocess import Preprocess
from vitsae.data.shapes import CLASS_NAMES, ShapesDataset
from vitsae.fileio import read_json, write_json_atomic

REPO = Path(__file__).resolve().parents[1]
PREPROCESS = Preprocess(size=(64, 64), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resample="bilinear")


@dataclass(frozen=True)
class TrainShapesConfig:
    model: Literal["vit", "cnn"] = field(default="vit", metadata={"help": "which model to train"})
    train_images: int = field(default=32_000, metadata={"help": "distinct training images"})
    epochs: int = field(default=1, metadata={"help": "passes over the training images"})
    eval_images: int = field(default=4_000, metadata={"help": "held-out images scored at the end"})
    train_seed: int = field(default=0, metadata={"help": "shapes seed of the training images"})
    eval_seed: int = field(default=1_000, metadata={"help": "shapes seed of the held-out images"})
    init_seed: int = field(default=0, metadata={"help": "torch seed for initialisation and batch order"})
    batch_size: int = field(default=64, metadata={"help": "training batch size"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW, warm-up then cosine)"})
    eval_every: int = field(default=100, metadata={"help": "print held-out accuracy every this many steps"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay"})
    threads: int = field(default=2, metadata={"help": "torch CPU threads"})
    out_dir: Path = field(default=REPO / "checkpoints", metadata={"help": "parent of shapes-<model>/"})
    init_from: Path | None = field(
        default=None, metadata={"help": "continue training the model saved in this directory"}
    )


def generate(seed: int, n_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapes images as uint8 (N, 3, 64, 64) and their labels."""
    dataset = ShapesDataset(seed=seed, n_images=n_images, image_size=PREPROCESS.size[0])
    images = np.empty((n_images, 64, 64, 3), dtype=np.uint8)
    labels = np.empty(n_images, dtype=np.int64)
    for i in range(n_images):
        sample = dataset.sample(i)
        images[i], labels[i] = sample.image_HWC, sample.label
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)


def normalise(images_BCHW: torch.Tensor) -> torch.Tensor:
    """What PREPROCESS does to a 64x64 image (its resize is the identity at that size), batched."""
    mean = torch.tensor(PREPROCESS.mean).view(1, 3, 1, 1)
    std = torch.tensor(PREPROCESS.std).view(1, 3, 1, 1)
    return (images_BCHW.float() / 255.0 - mean) / std


def build_vit() -> nn.Module:
    from vitsae.models.config import HookedViTConfig
    from vitsae.models.vit import HookedViT

    cfg = HookedViTConfig(
        d_model=96,
        n_layers=4,
        n_heads=4,
        d_mlp=384,
        image_size=(64, 64),
        patch_size=8,
        conv_stem=(32, 64, 96),
        class_token=False,
        pool="mean",
        head_out=len(CLASS_NAMES),
    )
    return HookedViT(cfg, PREPROCESS)


def build_cnn() -> nn.Module:
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(
        num_channels=3,
        embedding_size=32,
        hidden_sizes=[32, 64, 128, 192],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        hidden_act="relu",
        downsample_in_first_stage=False,
        num_labels=len(CLASS_NAMES),
        id2label=dict(enumerate(CLASS_NAMES)),
        label2id={name: i for i, name in enumerate(CLASS_NAMES)},
    )
    return ResNetForImageClassification(config)


def load_saved(kind: str, directory: Path) -> nn.Module:
    """A model this script saved earlier, to continue training it."""
    if kind == "vit":
        from vitsae.models.io import load_hooked_vit

        return load_hooked_vit(directory)
    from transformers import ResNetForImageClassification

    return ResNetForImageClassification.from_pretrained(
        directory, local_files_only=True, use_safetensors=True
    )


def logits_of(model: nn.Module, pixels_BCHW: torch.Tensor) -> torch.Tensor:
    out = model(pixels_BCHW)
    return out if isinstance(out, torch.Tensor) else out.logits


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = logits_of(model, normalise(images[start : start + batch_size]))
        correct += int((logits.argmax(-1) == labels[start : start + batch_size]).sum())
    return correct / len(images)


def train(
    cfg: TrainShapesConfig,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eval_images: torch.Tensor,
    eval_labels: torch.Tensor,
) -> None:
    generator = torch.Generator().manual_seed(cfg.init_seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "pos" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    steps_per_epoch = len(images) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    warmup = max(1, total // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))
    )
    step = 0
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        started, loss_sum = time.perf_counter(), 0.0
        for b in range(steps_per_epoch):
            batch = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            pixels = normalise(images[batch])
            loss = F.cross_entropy(logits_of(model, pixels), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            loss_sum += float(loss.detach())
            step += 1
            if step % cfg.eval_every == 0:
                probe = accuracy(model, eval_images[:500], eval_labels[:500])
                model.train()
                print(
                    f"step {step}/{total}: held-out accuracy {probe:.3f} on 500 images, "
                    f"{time.perf_counter() - started:.0f}s into epoch {epoch + 1}",
                    flush=True,
                )
        print(
            f"epoch {epoch + 1}/{cfg.epochs}: loss {loss_sum / steps_per_epoch:.4f} "
            f"({time.perf_counter() - started:.0f}s, step {step}/{total})",
            flush=True,
        )


def save(cfg: TrainShapesConfig, model: nn.Module, directory: Path) -> None:
    if cfg.model == "vit":
        from vitsae.models.io import save_hooked_vit

        save_hooked_vit(model, directory)
        return
    from transformers import ViTImageProcessor

    model.save_pretrained(directory, safe_serialization=True)
    processor = ViTImageProcessor(
        do_resize=True,
        size={"height": 64, "width": 64},
        resample=2,
        do_normalize=True,
        image_mean=list(PREPROCESS.mean),
        image_std=list(PREPROCESS.std),
    )
    processor.save_pretrained(directory)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser, TrainShapesConfig)
    cfg = config_from_args(TrainShapesConfig, parser.parse_args(argv))
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.init_seed)
    started = time.perf_counter()
    train_images, train_labels = generate(cfg.train_seed, cfg.train_images)
    eval_images, eval_labels = generate(cfg.eval_seed, cfg.eval_images)
    generated = time.perf_counter()
    print(
        f"generated {cfg.train_images} + {cfg.eval_images} images in {generated - started:.0f}s", flush=True
    )
    model = build_vit() if cfg.model == "vit" else build_cnn()
    if cfg.init_from is not None:
        model.load_state_dict(load_saved(cfg.model, cfg.init_from).state_dict())
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{cfg.model}: {n_params} parameters", flush=True)
    train(cfg, model, train_images, train_labels, eval_images, eval_labels)
    trained = time.perf_counter()
    held_out = accuracy(model, eval_images, eval_labels)
    print(f"held-out accuracy {held_out:.4f} on {cfg.eval_images} images (seed {cfg.eval_seed})", flush=True)
    directory = cfg.out_dir / f"shapes-{cfg.model}"
    save(cfg, model.eval(), directory)
    save_config(cfg, directory / "train_config.json")
    arguments = " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    command = f"python scripts/train_shapes_models.py {arguments}"
    write_json_atomic(
        directory / "card.json",
        {
            "name": f"shapes-{cfg.model}",
            "spec": f"vitsae:shapes-{cfg.model}",
            "architecture": "HookedViT" if cfg.model == "vit" else "ResNetForImageClassification",
            "task": "shapes dataset label rule (docs/shapes.md): 8 classes",
            "classes": list(CLASS_NAMES),
            "held_out_accuracy": round(held_out, 4),
            "held_out_images": cfg.eval_images,
            "held_out_seed": cfg.eval_seed,
            "train_seed": cfg.train_seed,
            "train_images": cfg.train_images,
            "epochs": cfg.epochs,
            "n_parameters": n_params,
            "train_wall_time_s": round(trained - generated, 1),
            "total_wall_time_s": round(time.perf_counter() - started, 1),
            "command": command.strip(),
            "threads": cfg.threads,
            "torch": torch.__version__,
            "machine": f"{platform.machine()} CPU, {cfg.threads} threads",
            "train_config": config_to_dict(cfg),
            "continued_from": None if cfg.init_from is None else read_json(cfg.init_from / "card.json"),
        },
    )
    print(f"saved {directory}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
