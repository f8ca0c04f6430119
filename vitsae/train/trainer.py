"""The training loop: many SAEs, one pass over the data, checkpointed and resumable.

Every batch is read once and fed to each SAE of the sweep, each with its own Adam optimizer, schedule,
dead-feature counters and output folder `<out>/<run name>/`. Rerunning the same command resumes from
the newest checkpoint in `<out>/checkpoints/` and (on CPU, fixed seed) continues the identical trajectory.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from vitsae.config import config_from_dict, config_to_dict
from vitsae.distributed import barrier, local_device, rank_world
from vitsae.errors import InvalidValue, VitsaeError
from vitsae.fileio import write_json_atomic
from vitsae.sae.config import SAEConfig
from vitsae.sae.io import save_sae
from vitsae.sae.model import SparseAutoencoder
from vitsae.train import checkpoint as ckpt
from vitsae.train import distributed as ddp
from vitsae.train.config import RunSpec, TrainConfig, expand_sweep
from vitsae.train.data import BatchSource, as_batch_source
from vitsae.train.dead import DeadFeatureTracker, auxk_loss, auxk_loss_sparse, resample_dead
from vitsae.train.metrics_log import MetricsLog, density_histogram, plot_curves
from vitsae.train.schedules import lr_factor, penalty_factor

# Scalars summed over ranks each step, ahead of the per-dimension sum of x and per-feature firing counts.
_STAT_NAMES = ("rows", "sq_err", "x_sq", "l0", "l1", "loss", "sparsity", "auxk")


class TrainingDiverged(VitsaeError, RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class _Window:
    """Sums over the steps since the last metric record (kept in place so checkpoints can hold them)."""

    stats: torch.Tensor
    x_sum_D: torch.Tensor
    fired_F: torch.Tensor
    steps: int = 0

    @classmethod
    def zeros(cls, d_in: int, d_sae: int, device: torch.device) -> _Window:
        def zeros(n: int) -> torch.Tensor:
            return torch.zeros(n, dtype=torch.float64, device=device)

        return cls(zeros(len(_STAT_NAMES)), zeros(d_in), zeros(d_sae))

    def add(self, stats: torch.Tensor, x_sum_D: torch.Tensor, fired_F: torch.Tensor) -> None:
        self.steps += 1
        self.stats += stats
        self.x_sum_D += x_sum_D
        self.fired_F += fired_F

    def reset(self) -> None:
        self.steps = 0
        for tensor in (self.stats, self.x_sum_D, self.fired_F):
            tensor.zero_()


@dataclass
class _Run:
    spec: RunSpec
    sae: SparseAutoencoder
    optimizer: torch.optim.Adam
    dead: DeadFeatureTracker
    window: _Window
    log: MetricsLog | None = None
    last_record: dict[str, Any] = field(default_factory=dict)
    resampled: int = 0


class Trainer:
    """Trains the sweep `cfg` describes on `batches`, writing everything under `out_dir`.

    `batches`: a `BatchSource`, a factory `(epoch, start_batch) -> iterable of acts_BD`, or an iterable
    of batches. `norm_scale` (e.g. from the store) overrides the estimate of `cfg.normalize`;
    `sae_fields` (hook_name, model_spec, store) are recorded in each SAE's config.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        batches: BatchSource | Iterable[torch.Tensor],
        out_dir: str | Path,
        norm_scale: float | None = None,
        sae_fields: dict[str, str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.source = as_batch_source(batches)
        self.out_dir = Path(out_dir)
        self.given_norm_scale = norm_scale
        self.sae_fields = sae_fields or {}
        self.rank, self.world_size = rank_world()
        self.device = local_device(cfg.device)
        self.runs: list[_Run] = []
        self.step = 0
        self.tokens = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.norm_scale: float | None = None
        self.last_checkpoint: Path | None = None

    # --- set-up ----------------------------------------------------------------------------------
    def _first_batches(self, n: int) -> tuple[list[torch.Tensor], Iterator[torch.Tensor]]:
        """The first `n` batches of epoch 0, and the epoch's iterator that replays them first.

        Replaying (rather than asking the source again) lets one-shot iterators train on every batch.
        """
        epoch0 = iter(self.source.batches(0, 0))
        taken = list(itertools.islice(epoch0, n))
        if not taken:
            raise InvalidValue("the activation source yielded no batches")
        return taken, itertools.chain(taken, epoch0)

    def _build_runs(self, specs: list[RunSpec]) -> None:
        for index, spec in enumerate(specs):
            generator = torch.Generator().manual_seed(self.cfg.seed * 7919 + index)
            sae = SparseAutoencoder(spec.sae, generator=generator).to(self.device).train()
            optimizer = torch.optim.Adam(
                sae.parameters(), lr=spec.lr, betas=(self.cfg.adam_beta1, self.cfg.adam_beta2)
            )
            dead = DeadFeatureTracker(spec.sae.d_sae, self.cfg.dead_tokens, self.device)
            window = _Window.zeros(spec.sae.d_in, spec.sae.d_sae, self.device)
            self.runs.append(_Run(spec, sae, optimizer, dead, window))

    def _start_fresh(self) -> Iterator[torch.Tensor]:
        """Initialise every run from the first batches; returns the data iterator of epoch 0."""
        torch.manual_seed(self.cfg.seed)
        batches, data = self._first_batches(max(self.cfg.norm_batches, 1))
        sample = [b.to(torch.float32) for b in batches]
        d_in = sample[0].shape[-1]
        if self.cfg.normalize == "none":
            self.norm_scale = None
        elif self.given_norm_scale is not None:
            self.norm_scale = float(self.given_norm_scale)
        else:
            mean_norm = float(torch.cat(sample).norm(dim=-1).mean())
            if not math.isfinite(mean_norm):
                raise InvalidValue(
                    f"the first {len(sample)} activation batches contain NaN or inf values; "
                    "cannot estimate the normalisation"
                )
            self.norm_scale = math.sqrt(d_in) / mean_norm if mean_norm > 0 else 1.0
        specs = expand_sweep(self.cfg, d_in, norm_scale=self.norm_scale, **self.sae_fields)
        self._build_runs(specs)
        first_ND = sample[0].to(self.device) * (self.norm_scale or 1.0)
        for run in self.runs:
            run.sae.init_b_dec(first_ND)
        return data

    def _resume(self, path: Path) -> None:
        state = ckpt.read_trainer_state(path)
        changed = ckpt.resume_changes(state, self.cfg)
        if changed:
            raise InvalidValue(
                f"{self.out_dir} holds a run with a different configuration: {'; '.join(changed)}; "
                "rerun with the same options or choose a new output folder"
            )
        specs = [
            RunSpec(r["name"], config_from_dict(SAEConfig, r["sae"]), r["lr"], r["l1_coefficient"])
            for r in state["runs"]
        ]
        self._build_runs(specs)
        for run in self.runs:
            checkpoint = self._run_checkpoint(run)
            ckpt.load_run(path, run.spec.name, checkpoint)
            run.resampled = checkpoint.extra["resampled"]
            run.window.steps = checkpoint.extra["window_steps"]
            run.last_record = checkpoint.extra.get("last_record", {})  # the final one, at a finished run
        self.step, self.tokens = state["step"], state["tokens"]
        self.epoch, self.batch_in_epoch = state["epoch"], state["batch_in_epoch"]
        self.norm_scale = state["norm_scale"]
        ckpt.restore_rng(path)
        self.last_checkpoint = path

    def _run_checkpoint(self, run: _Run) -> ckpt.RunCheckpoint:
        counters = {
            "tokens_since_fired": run.dead.tokens_since_fired_F,
            "window_stats": run.window.stats,
            "window_x_sum": run.window.x_sum_D,
            "window_fired": run.window.fired_F,
        }
        extra = {
            "name": run.spec.name,
            "sae": config_to_dict(run.spec.sae),
            "lr": run.spec.lr,
            "l1_coefficient": run.spec.l1_coefficient,
            "resampled": run.resampled,
            "window_steps": run.window.steps,
            "last_record": run.last_record,
        }
        return ckpt.RunCheckpoint(run.sae, run.optimizer, counters, extra)

    # --- the loop --------------------------------------------------------------------------------
    def fit(self) -> dict[str, dict[str, Any]]:
        """Train (or resume and finish) every SAE; returns each run's training summary by name."""
        latest = ckpt.latest_checkpoint(self.out_dir)
        if latest is not None:
            self._resume(latest)
            data = iter(self.source.batches(self.epoch, self.batch_in_epoch))
        else:
            data = self._start_fresh()
        if self.rank == 0:
            resume_step = self.step if latest is not None else None
            for run in self.runs:
                run.log = MetricsLog(self.out_dir / run.spec.name, resume_step)
        total = self.cfg.total_steps
        bar = tqdm(
            total=total,
            initial=self.step,
            disable=not (self.cfg.progress and self.rank == 0),
            unit="step",
            dynamic_ncols=True,
        )
        started, start_tokens = time.perf_counter(), self.tokens
        try:
            while self.step < total:
                acts_BD = next(data, None)
                if acts_BD is None:
                    if self.batch_in_epoch == 0:
                        warnings.warn(
                            f"the activation source has no batches for epoch {self.epoch} (a one-shot "
                            f"iterator?); training stops at step {self.step} of {total}",
                            stacklevel=2,
                        )
                        if self.step % self.cfg.log_every:
                            self._log((self.tokens - start_tokens) / max(time.perf_counter() - started, 1e-9))
                        self._checkpoint()
                        break
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    data = iter(self.source.batches(self.epoch, 0))
                    continue
                self._step(acts_BD)
                bar.update(1)
                if self.step % self.cfg.log_every == 0 or self.step == total:
                    rate = (self.tokens - start_tokens) / max(time.perf_counter() - started, 1e-9)
                    self._log(rate)
                    bar.set_postfix(loss=f"{self.runs[0].last_record['loss']:.4g}", tok_s=f"{rate:,.0f}")
                if self.step % self.cfg.checkpoint_every == 0 or self.step == total:
                    self._checkpoint()
        finally:
            bar.close()
            close = getattr(data, "close", None)
            if close is not None:
                close()
            for run in self.runs:
                if run.log is not None:
                    run.log.close()
        return self._finish()

    def _check_width(self, acts_BD: torch.Tensor) -> None:
        d_in = self.runs[0].spec.sae.d_in
        if acts_BD.dim() != 2 or acts_BD.shape[1] != d_in:
            raise InvalidValue(
                f"activation batch has shape {tuple(acts_BD.shape)} (width {acts_BD.shape[-1]}) but the "
                f"SAEs were built for width d_in={d_in}"
                + (f" (checkpoint {self.last_checkpoint})" if self.last_checkpoint else "")
            )

    def _step(self, acts_BD: torch.Tensor) -> None:
        self._check_width(acts_BD)
        x_BD = acts_BD.to(self.device, torch.float32)
        if self.norm_scale is not None:
            x_BD = x_BD * self.norm_scale
        x_local = ddp.local_slice(x_BD, self.rank, self.world_size)
        for run in self.runs:
            self._train_one(run, x_local, x_BD)
        self.step += 1
        self.batch_in_epoch += 1
        self.tokens += x_BD.shape[0]

    def _train_one(self, run: _Run, x_BD: torch.Tensor, x_full_BD: torch.Tensor) -> None:
        cfg, sae, opt = self.cfg, run.sae, run.optimizer
        lr = run.spec.lr * lr_factor(
            self.step,
            cfg.total_steps,
            cfg.lr_warmup_steps,
            cfg.lr_decay,
            cfg.lr_decay_start,
            cfg.lr_min_ratio,
        )
        for group in opt.param_groups:
            group["lr"] = lr
        coefficient = run.spec.l1_coefficient * penalty_factor(self.step, cfg.l1_warmup_steps)
        out = sae.forward_train(x_BD, self.world_size)
        sq_err_B = (x_BD - out.recon_BD).square().sum(-1)
        recon_loss = sq_err_B.mean()
        sparsity = recon_loss.new_zeros(()) if out.penalty_B is None else out.penalty_B.mean()
        loss = recon_loss + coefficient * sparsity
        aux = recon_loss.new_zeros(())
        dead_mask_F = run.dead.dead_mask_F
        if cfg.dead_handling == "auxk" and bool(dead_mask_F.any()):
            k_aux = cfg.auxk_k or max(run.spec.sae.d_in // 2, 1)
            if out.pre_BF is None:
                aux = auxk_loss_sparse(sae, x_BD, out.recon_BD, dead_mask_F, k_aux, self.world_size)
            else:
                aux = auxk_loss(
                    x_BD, out.recon_BD, out.pre_BF, sae.W_dec, dead_mask_F, k_aux, self.world_size
                )
            loss = loss + cfg.auxk_coefficient * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()

        with torch.no_grad():
            rows = x_BD.shape[0]
            fired_F = out.fire_counts_F.to(torch.float64)
            scalars = torch.stack(
                [
                    torch.tensor(float(rows), dtype=torch.float64, device=x_BD.device),
                    sq_err_B.sum().double(),
                    x_BD.double().square().sum(),
                    fired_F.sum(),
                    out.abs_sum.double(),
                    loss.detach().double() * rows,
                    sparsity.detach().double() * rows,
                    aux.detach().double() * rows,
                ]
            )
            packed = torch.cat([scalars, x_BD.double().sum(0), fired_F])
            ddp.all_reduce_sum(packed, self.world_size)
            n_stats, d_in = len(_STAT_NAMES), x_BD.shape[1]
            stats, x_sum_D, fired_F = (
                packed[:n_stats],
                packed[n_stats : n_stats + d_in],
                packed[n_stats + d_in :],
            )
        if not math.isfinite(float(stats[5])):
            where = self.last_checkpoint or "none (no checkpoint was written yet)"
            raise TrainingDiverged(
                f"{run.spec.name}: the loss became {float(stats[5] / stats[0])} at step {self.step}; "
                f"training stopped. Last good checkpoint: {where}. Try a lower learning rate or grad_clip."
            )
        ddp.all_reduce_mean_grads(list(sae.parameters()), self.world_size)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip)
        if run.spec.sae.unit_norm_decoder:
            sae.project_decoder_grad()
        opt.step()
        if run.spec.sae.unit_norm_decoder:
            sae.normalise_decoder()
        run.dead.update(fired_F, int(stats[0]))
        run.window.add(stats, x_sum_D, fired_F)
        if self._resample_due():
            n = resample_dead(sae, opt, x_full_BD, run.dead.dead_mask_F)
            run.dead.tokens_since_fired_F[run.dead.dead_mask_F] = 0
            run.resampled += n

    def _resample_due(self) -> bool:
        cfg = self.cfg
        return (
            cfg.dead_handling == "resample"
            and (self.step + 1) % cfg.resample_every == 0
            and self.step < cfg.resample_until * cfg.total_steps
        )

    # --- records, checkpoints, outputs -----------------------------------------------------------
    def _log(self, tokens_per_s: float) -> None:
        for run in self.runs:
            w = run.window
            s = dict(zip(_STAT_NAMES, w.stats.tolist(), strict=True))
            rows = max(s["rows"], 1.0)
            total_var = s["x_sq"] - float(w.x_sum_D.square().sum()) / rows
            frequency_F = w.fired_F / rows
            record: dict[str, Any] = {
                "step": self.step,
                "tokens": self.tokens,
                "lr": run.optimizer.param_groups[0]["lr"],
                "l1_coefficient": run.spec.l1_coefficient
                * penalty_factor(self.step - 1, self.cfg.l1_warmup_steps),
                "loss": s["loss"] / rows,
                "mse": s["sq_err"] / (rows * run.spec.sae.d_in),
                "fvu": s["sq_err"] / total_var if total_var > 0 else float("nan"),
                "l0": s["l0"] / rows,
                "l1": s["l1"] / rows,
                "sparsity_loss": s["sparsity"] / rows,
                "auxk_loss": s["auxk"] / rows,
                "dead_fraction": run.dead.dead_fraction(),
                "dense_fraction": float((frequency_F > self.cfg.dense_frequency).double().mean()),
                "density_histogram": density_histogram(frequency_F.cpu()),
                "resampled": run.resampled,
                "tokens_per_s": tokens_per_s,
            }
            if run.spec.sae.architecture == "batchtopk":
                record["threshold"] = float(run.sae.threshold)
            if run.spec.sae.architecture == "jumprelu":
                record["mean_threshold"] = float(run.sae.jumprelu_threshold.detach().mean())
            run.last_record = record
            if run.log is not None:
                run.log.write(record)
            w.reset()

    def _trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "tokens": self.tokens,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "norm_scale": self.norm_scale,
            "config": config_to_dict(self.cfg),
            "world_size": self.world_size,
            "runs": [
                {
                    "name": r.spec.name,
                    "sae": config_to_dict(r.spec.sae),
                    "lr": r.spec.lr,
                    "l1_coefficient": r.spec.l1_coefficient,
                }
                for r in self.runs
            ],
        }

    def _checkpoint(self) -> None:
        if self.rank == 0:
            runs = {run.spec.name: self._run_checkpoint(run) for run in self.runs}
            self.last_checkpoint = ckpt.save_checkpoint(
                self.out_dir, self._trainer_state(), runs, self.cfg.keep_checkpoints
            )
        barrier()

    def _finish(self) -> dict[str, dict[str, Any]]:
        summaries = {}
        for run in self.runs:
            summary = {
                "steps": self.step,
                "tokens": self.tokens,
                "lr": run.spec.lr,
                "l1_coefficient": run.spec.l1_coefficient,
                "final_metrics": {k: v for k, v in run.last_record.items() if k != "density_histogram"},
                "train_config": config_to_dict(self.cfg),
            }
            summaries[run.spec.name] = summary
            if self.rank == 0:
                run_dir = self.out_dir / run.spec.name
                save_sae(run.sae, run_dir, summary)
                if self.cfg.plot and (run_dir / "metrics.jsonl").exists():
                    plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
        if self.rank == 0:
            write_json_atomic(self.out_dir / "sweep.json", summaries)
        barrier()
        return summaries
