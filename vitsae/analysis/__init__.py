"""Analysis of trained SAEs: streaming per-feature statistics and top-k retrieval, activation maps, and the
direct logit effects of decoder directions."""

from vitsae.analysis.checkpoint import CheckpointMismatch
from vitsae.analysis.compute import compute_feature_stats, compute_feature_stats_from_images
from vitsae.analysis.logits import LogitEffects, logit_effects, unembedding
from vitsae.analysis.stats import FeatureStats, FeatureStatsAccumulator, StatsConfig

__all__ = [
    "CheckpointMismatch",
    "FeatureStats",
    "FeatureStatsAccumulator",
    "LogitEffects",
    "StatsConfig",
    "compute_feature_stats",
    "compute_feature_stats_from_images",
    "logit_effects",
    "unembedding",
]
