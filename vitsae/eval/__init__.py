"""Evaluation of SAEs: reconstruction metrics (FVU, MSE, explained variance, cosine, L0, L1)."""

from vitsae.eval.metrics import ReconstructionStats, evaluate_sae, reconstruction_metrics

__all__ = ["ReconstructionStats", "evaluate_sae", "reconstruction_metrics"]
