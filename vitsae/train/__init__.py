"""Training SAEs: the loop over many SAEs at once, schedules, dead features, checkpoints, multi-GPU."""

from vitsae.train.config import RunSpec, TrainConfig, expand_sweep
from vitsae.train.data import BatchSource, TensorBatches, as_batch_source, load_activation_file
from vitsae.train.trainer import Trainer, TrainingDiverged

__all__ = [
    "BatchSource",
    "RunSpec",
    "TensorBatches",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "as_batch_source",
    "expand_sweep",
    "load_activation_file",
]
