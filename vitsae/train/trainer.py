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
from vitsae.eval.metrics import ReconstructionStats, duplicate_fraction, later_copies
from vitsae.fileio import write_json_atomic
from vitsae.sae.config import SAEConfig
from vitsae.sae.init import rows_from_data
from vitsae.sae.io import save_sae
from vitsae.sae.model import SparseAutoencoder
from vitsae.train import checkpoint as ckpt
from vitsae.train import distributed as ddp
from vitsae.train.config import RunSpec, TrainConfig, expand_sweep
from vitsae.train.data import BatchSource, as_batch_source
from vitsae.train.dead import DeadFeatureTracker, auxk_loss, auxk_loss_sparse, resample_dead
from vitsae.train.l0_control import L0Controller, anchor_thresholds
from vitsae.train.metrics_log import MetricsLog, density_histogram, plot_curves
from vitsae.train.schedules import lr_factor, penalty_factor
from vitsae.train.unshrink import UnshrinkFit, fit_steps, unshrunk_jumprelu

# Loss terms summed (times rows) over ranks beside the reconstruction statistics of each step.
LOSS_NAMES = ("loss", "sparsity", "auxk")
# Above this many multiply-adds (F * F * D) the duplicate-feature scan runs only for the final record.
DUPLICATE_SCAN_LIMIT = 1 << 34


class TrainingDiverged(VitsaeError, RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class _Losses:
    """One step's loss terms (means over this rank's rows) and the coefficient they were weighted with."""

    recon: torch.Tensor
    sparsity: torch.Tensor
    aux: torch.Tensor
    total: torch.Tensor
    coefficient: float


@dataclass
class _Stats:
    """Statistics summed over every rank: the reconstruction sums `eval` summarises, and the loss sums.

    One step's, or a window's since the last metric record (kept in place so checkpoints can hold them).
    """

    recon: ReconstructionStats
    losses: torch.Tensor  # LOSS_NAMES, each summed over rows
    steps: int = 0

    @classmethod
    def zeros(cls, device: torch.device) -> _Stats:
        return cls(ReconstructionStats(), torch.zeros(len(LOSS_NAMES), dtype=torch.float64, device=device))

    @property
    def rows(self) -> float:
        return self.recon.scalars["rows"]

    def loss_means(self) -> dict[str, float]:
        rows = max(self.rows, 1.0)
        return {name: value / rows for name, value in zip(LOSS_NAMES, self.losses.tolist(), strict=True)}

    def add(self, other: _Stats) -> None:
        self.steps += 1
        self.recon.add(other.recon)
        self.losses += other.losses

    def reset(self) -> None:
        self.steps = 0
        self.recon.reset()
        self.losses.zero_()


@dataclass
class _Run:
    spec: RunSpec
    sae: SparseAutoencoder
    optimizer: torch.optim.Adam
    dead: DeadFeatureTracker
    window: _Stats
    controller: L0Controller | None = None
    unshrink: UnshrinkFit | None = None  # relu with --unshrink: the sums of the final fit
    log: MetricsLog | None = None
    last_record: dict[str, Any] = field(default_factory=dict)
    last_coefficient: float = 0.0  # the penalty coefficient of the last step (the controller's trajectory)
    resampled: int = 0
    copies_resampled: int = 0  # relu: features re-initialised as copies of a lower-numbered feature


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
        cfg = self.cfg
        for index, spec in enumerate(specs):
            generator = torch.Generator().manual_seed(cfg.seed * 7919 + index)
            sae = SparseAutoencoder(spec.sae, generator=generator).to(self.device).train()
            optimizer = torch.optim.Adam(sae.parameters(), lr=spec.lr, betas=(cfg.adam_beta1, cfg.adam_beta2))
            dead = DeadFeatureTracker(spec.sae.d_sae, cfg.resolved_dead_tokens, self.device)
            controller = None
            if spec.target_l0 is not None:
                controller = L0Controller(spec.target_l0, spec.l1_coefficient, cfg.target_warmup_steps)
            unshrink = UnshrinkFit() if cfg.unshrink and spec.sae.architecture == "relu" else None
            self.runs.append(
                _Run(spec, sae, optimizer, dead, _Stats.zeros(self.device), controller, unshrink=unshrink)
            )

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
        sample_ND = torch.cat(sample).to(self.device) * (self.norm_scale or 1.0)
        for index, run in enumerate(self.runs):
            run.sae.init_b_dec(first_ND)
            if self.cfg.dictionary_init == "data":
                self._init_dictionary_from_data(run, sample_ND, index)
            if run.spec.target_l0 is not None and run.spec.sae.architecture == "jumprelu":
                self._init_thresholds_at_target(run, sample_ND)
        return data

    @torch.no_grad()
    def _init_thresholds_at_target(self, run: _Run, sample_ND: torch.Tensor) -> None:
        """JumpReLU with a target L0: each feature's threshold at the (1 - target / F) quantile of its
        pre-activations on the sample, so training starts at the target L0 (Adam moves log-thresholds
        only about lr per step, too slowly to come down from ReLU's F / 2 in a short run)."""
        sae = run.sae
        rows_ND = sample_ND[: 1 << 14]
        quantile = 1.0 - min(run.spec.target_l0 / sae.cfg.d_sae, 1.0)
        pre_NF = sae.pre_activations(rows_ND, normalized=True)
        threshold_F = pre_NF.float().kthvalue(max(round(quantile * len(rows_ND)), 1), dim=0).values
        sae.log_threshold.copy_(threshold_F.clamp_min(1e-3).log())

    @torch.no_grad()
    def _init_dictionary_from_data(self, run: _Run, sample_ND: torch.Tensor, index: int) -> None:
        """Decoder rows at sample rows minus b_dec (`vitsae.sae.init.rows_from_data`), encoder = its
        transpose, as the random initialisation ties them."""
        generator = torch.Generator().manual_seed(self.cfg.seed * 7919 + index + 1)
        sae = run.sae
        rows_FD = rows_from_data(
            sample_ND, sae.b_dec, sae.cfg.d_sae, sae.cfg.initial_decoder_norm, generator
        ).to(sae.W_dec)
        sae.W_dec.copy_(rows_FD)
        sae.W_enc.copy_(rows_FD.T)

    def _resume(self, path: Path) -> None:
        state = ckpt.read_trainer_state(path)
        if state.get("format_version", 0) < ckpt.FORMAT_VERSION:
            raise InvalidValue(
                f"{path} was written by an older vitsae (checkpoint format {state.get('format_version', 0)}, "
                f"this version writes {ckpt.FORMAT_VERSION}) and cannot be resumed; "
                "choose a new output folder"
            )
        changed = ckpt.resume_changes(state, self.cfg)
        if changed:
            raise InvalidValue(
                f"{self.out_dir} holds a run with a different configuration: {'; '.join(changed)}; "
                "rerun with the same options or choose a new output folder"
            )
        specs = [
            RunSpec(
                r["name"],
                config_from_dict(SAEConfig, r["sae"]),
                r["lr"],
                r["l1_coefficient"],
                r.get("target_l0"),
            )
            for r in state["runs"]
        ]
        self._build_runs(specs)
        for run in self.runs:
            checkpoint = self._run_checkpoint(run)
            ckpt.load_run(path, run.spec.name, checkpoint)
            run.resampled = checkpoint.extra["resampled"]
            run.copies_resampled = checkpoint.extra.get("copies_resampled", 0)
            run.window.steps = checkpoint.extra["window_steps"]
            run.dead.load_state(checkpoint.extra["dead"])
            if run.controller is not None:
                run.controller = L0Controller.from_state(checkpoint.extra["controller"])
            if run.unshrink is not None:
                run.unshrink = UnshrinkFit.from_state(checkpoint.extra.get("unshrink") or {})
            run.last_record = checkpoint.extra.get("last_record", {})  # the final one, at a finished run
        self.step, self.tokens = state["step"], state["tokens"]
        self.epoch, self.batch_in_epoch = state["epoch"], state["batch_in_epoch"]
        self.norm_scale = state["norm_scale"]
        ckpt.restore_rng(path)
        self.last_checkpoint = path

    def _run_checkpoint(self, run: _Run) -> ckpt.RunCheckpoint:
        if run.window.recon.sums is None:  # a checkpoint before the first step: allocate the sums
            width, features = run.spec.sae.d_in, run.spec.sae.d_sae
            zeros_BD = torch.zeros(1, width, device=self.device)
            run.window.recon.update_counts(zeros_BD, zeros_BD, torch.zeros(features, device=self.device))
            run.window.recon.reset()
        counters = {
            "tokens_since_fired": run.dead.tokens_since_fired_F,
            "window_fired_rare": run.dead.window_fired_F,
            "window_recon": run.window.recon.sums,
            "window_losses": run.window.losses,
        }
        extra = {
            "name": run.spec.name,
            "sae": config_to_dict(run.spec.sae),
            "lr": run.spec.lr,
            "l1_coefficient": run.spec.l1_coefficient,
            "target_l0": run.spec.target_l0,
            "resampled": run.resampled,
            "copies_resampled": run.copies_resampled,
            "window_steps": run.window.steps,
            "dead": run.dead.state(),
            "controller": None if run.controller is None else run.controller.state(),
            "unshrink": None if run.unshrink is None else run.unshrink.state(),
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
                            rate = (self.tokens - start_tokens) / max(time.perf_counter() - started, 1e-9)
                            self._log(rate, final=True)
                        self._checkpoint()
                        break
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    data = iter(self.source.batches(self.epoch, 0))
                    continue
                self._step(acts_BD)
                bar.update(1)
                if self.step % self.cfg.log_every == 0 or self.step == total:
                    rate = (self.tokens - start_tokens) / max(time.perf_counter() - started, 1e-9)
                    self._log(rate, final=self.step == total)
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
        """One optimiser step of one SAE: loss, reduction over ranks, step, then the counters."""
        self._set_lr(run)
        out, losses = self._loss(run, x_BD)
        run.optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
        stats = self._reduce(x_BD, out, losses)
        self._check_finite(run, stats)
        self._optimise(run)
        self._update_counters(run, stats, x_full_BD)
        run.last_coefficient = losses.coefficient

    def _in_refit(self) -> bool:
        """Whether this step is in the final refit phase (ReLU: encoder frozen, no penalty)."""
        cfg = self.cfg
        return cfg.refit_fraction > 0 and self.step >= (1.0 - cfg.refit_fraction) * cfg.total_steps

    def _refitting(self, run: _Run) -> bool:
        return run.spec.sae.architecture == "relu" and self._in_refit()

    def _coefficient(self, run: _Run) -> float:
        if self._refitting(run):
            return 0.0
        if run.controller is not None:
            return run.controller.coefficient
        return run.spec.l1_coefficient * penalty_factor(self.step, self.cfg.l1_warmup_steps)

    def _set_lr(self, run: _Run) -> None:
        cfg = self.cfg
        lr = run.spec.lr * lr_factor(
            self.step,
            cfg.total_steps,
            cfg.resolved_lr_warmup_steps,
            cfg.lr_decay,
            cfg.lr_decay_start,
            cfg.lr_min_ratio,
        )
        for group in run.optimizer.param_groups:
            group["lr"] = lr

    def _loss(self, run: _Run, x_BD: torch.Tensor) -> tuple[Any, _Losses]:
        """The forward pass and the loss: reconstruction + coefficient * sparsity (+ AuxK, dead features)."""
        cfg, sae = self.cfg, run.sae
        coefficient = self._coefficient(run)
        out = sae.forward_train(x_BD, self.world_size)
        recon = (x_BD - out.recon_BD).square().sum(-1).mean()
        sparsity = recon.new_zeros(()) if out.penalty_B is None else out.penalty_B.mean()
        total = recon + coefficient * sparsity
        aux = recon.new_zeros(())
        dead_mask_F = run.dead.dead_mask_F
        if cfg.dead_handling == "auxk" and not self._refitting(run) and bool(dead_mask_F.any()):
            k_aux = cfg.auxk_k or max(run.spec.sae.d_in // 2, 1)
            if out.pre_BF is None:
                aux = auxk_loss_sparse(sae, x_BD, out.recon_BD, dead_mask_F, k_aux, self.world_size)
            else:
                aux = auxk_loss(
                    x_BD, out.recon_BD, out.pre_BF, sae.W_dec, dead_mask_F, k_aux, self.world_size
                )
            total = total + cfg.auxk_coefficient * aux
        return out, _Losses(recon, sparsity, aux, total, coefficient)

    @torch.no_grad()
    def _reduce(self, x_BD: torch.Tensor, out: Any, losses: _Losses) -> _Stats:
        """This step's statistics summed over ranks (one all-reduce of the packed sums)."""
        stats = _Stats.zeros(x_BD.device)
        stats.recon.update_counts(x_BD, out.recon_BD, out.fire_counts_F, out.abs_sum)
        rows = x_BD.shape[0]
        stats.losses = torch.stack([losses.total, losses.sparsity, losses.aux]).detach().double() * rows
        packed = torch.cat([stats.recon.sums, stats.losses])
        ddp.all_reduce_sum(packed, self.world_size)
        n_recon = stats.recon.sums.numel()
        stats.recon.sums, stats.losses = packed[:n_recon], packed[n_recon:]
        return stats

    def _check_finite(self, run: _Run, stats: _Stats) -> None:
        loss = stats.loss_means()["loss"]
        if not math.isfinite(loss):
            where = self.last_checkpoint or "none (no checkpoint was written yet)"
            raise TrainingDiverged(
                f"{run.spec.name}: the loss became {loss} at step {self.step}; "
                f"training stopped. Last good checkpoint: {where}. Try a lower learning rate or grad_clip."
            )

    def _optimise(self, run: _Run) -> None:
        """Average gradients over ranks, clip, keep unit-norm decoders on the sphere, take the Adam step."""
        sae = run.sae
        ddp.all_reduce_mean_grads(list(sae.parameters()), self.world_size)
        if self._refitting(run):
            for frozen in (sae.W_enc, sae.b_enc, sae.b_dec):
                frozen.grad = None  # Adam skips a parameter without a gradient: the support stays fixed
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), self.cfg.grad_clip)
        if run.spec.sae.unit_norm_decoder:
            sae.project_decoder_grad()
        run.optimizer.step()
        if run.spec.sae.unit_norm_decoder:
            sae.normalise_decoder()

    def _update_counters(self, run: _Run, stats: _Stats, x_full_BD: torch.Tensor) -> None:
        """Dead-feature counters, the L0 controller, the metric window and resampling."""
        rows = int(stats.rows)
        fired_F = stats.recon.fired_F
        run.dead.update(fired_F, rows)
        if run.controller is not None and not self._refitting(run):
            run.controller.update(self.step, stats.recon.scalars["l0"] / rows)
        if self._anchor_due(run):
            anchor_thresholds(run.sae, x_full_BD, run.controller.setpoint(self.step))
        run.window.add(stats)
        if self._resample_due():
            n = resample_dead(run.sae, run.optimizer, x_full_BD, run.dead.dead_mask_F)
            run.dead.tokens_since_fired_F[run.dead.dead_mask_F] = 0
            run.resampled += n
        if self._copies_due(run):
            copies_F = later_copies(run.sae.W_dec)
            run.copies_resampled += int(copies_F.sum())
            if self.cfg.dead_handling != "none":  # the dead features are re-initialised with them
                copies_F |= run.dead.dead_mask_F
                run.dead.tokens_since_fired_F[run.dead.dead_mask_F] = 0
            resample_dead(run.sae, run.optimizer, x_full_BD, copies_F)
        first_fit_step = self.cfg.total_steps - fit_steps(self.cfg.total_steps)
        if run.unshrink is not None and self.step >= first_fit_step:
            if self.step == first_fit_step:  # a fresh fit (a run extended by --total-tokens drops the old)
                run.unshrink = UnshrinkFit()
            run.unshrink.update(run.sae, x_full_BD)

    def _every(self, steps: int, until: float = 1.0) -> bool:
        """Whether the step just taken ends a period of `steps` (0: never) in the first `until` of the run."""
        return steps > 0 and (self.step + 1) % steps == 0 and self.step < until * self.cfg.total_steps

    def _copies_due(self, run: _Run) -> bool:
        """ReLU-L1 keeps copies of one direction (splitting a code between copies costs no more L1), so they
        are re-initialised like dead features while the penalty still moves (docs/training.md)."""
        return run.spec.sae.architecture == "relu" and self._every(
            self.cfg.copies_every, self.cfg.copies_until
        )

    def _anchor_due(self, run: _Run) -> bool:
        """JumpReLU's L0 falls below a target the penalty cannot raise it to (docs/training.md), so its
        thresholds are re-anchored at the setpoint every `anchor_every` steps."""
        return (
            run.spec.sae.architecture == "jumprelu"
            and run.controller is not None
            and self._every(self.cfg.anchor_every)
        )

    def _resample_due(self) -> bool:
        cfg = self.cfg
        return cfg.dead_handling == "resample" and self._every(cfg.resample_every, cfg.resample_until)

    # --- records, checkpoints, outputs -----------------------------------------------------------
    def _log(self, tokens_per_s: float, final: bool = False) -> None:
        for run in self.runs:
            w = run.window
            summary = w.recon.summary() if w.rows else {}
            losses = w.loss_means()
            frequency_F = w.recon.fired_F / max(w.rows, 1.0) if w.rows else None
            sae_cfg = run.spec.sae
            record: dict[str, Any] = {
                "step": self.step,
                "tokens": self.tokens,
                "lr": run.optimizer.param_groups[0]["lr"],
                "l1_coefficient": run.last_coefficient,
                "loss": losses["loss"],
                "mse": summary.get("mse", float("nan")),
                "fvu": summary.get("fvu", float("nan")),
                "l0": summary.get("l0", float("nan")),
                "l1": summary.get("l1", float("nan")),
                "sparsity_loss": losses["sparsity"],
                "auxk_loss": losses["auxk"],
                "dead_fraction": run.dead.dead_fraction(),
                "rare_fraction": run.dead.rare_fraction,
                "dense_fraction": float((frequency_F > self.cfg.dense_frequency).double().mean())
                if frequency_F is not None
                else 0.0,
                "density_histogram": density_histogram(frequency_F.cpu()) if frequency_F is not None else [],
                "resampled": run.resampled,
                "copies_resampled": run.copies_resampled,
                "tokens_per_s": tokens_per_s,
            }
            if final or sae_cfg.d_sae**2 * sae_cfg.d_in <= DUPLICATE_SCAN_LIMIT:
                record["duplicate_fraction"] = duplicate_fraction(run.sae.W_dec)
            if run.controller is not None:
                record["l0_target"] = run.controller.setpoint(self.step - 1)
            if self._refitting(run):
                record["phase"] = "refit"
            if sae_cfg.architecture == "batchtopk":
                record["threshold"] = float(run.sae.threshold)
            if sae_cfg.architecture == "jumprelu":
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
                    "target_l0": r.spec.target_l0,
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
            if run.unshrink is not None:
                run.sae = unshrunk_jumprelu(run.sae, run.unshrink.alpha)
                summary["unshrink"] = {
                    "trained_architecture": "relu",
                    "alpha": run.unshrink.alpha,
                    "error_ratio": run.unshrink.error_ratio,
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
