"""Training: the common ``Trainer``, checkpoints, and ``run_config`` (train from a YAML experiment config).

``run_config("configs/sfnet_cub.yaml")`` reads the config, looks its ``method:`` up in ``METHODS`` and trains.
A method registers its ``Experiment`` builder with ``@register_trainer`` beside it (see ``corrmark.train.sfnet``);
:func:`register_method` adds one from outside the package.
Under ``torchrun`` the same calls train data-parallel (``corrmark.train.distributed``, docs/DISTRIBUTED.md).
"""

from .checkpoint import (capture_rng_state, check_state_keys, latest_checkpoint, load_checkpoint, read_checkpoint,
                         restore_rng_state, save_checkpoint, seed_everything)
from .distributed import DistributedSetup
from .runner import METHODS, Experiment, load_config, register_method, run_config, seeded_config
from .trainer import BatchSource, Trainer, cosine_schedule, move_to_device

__all__ = [
    "METHODS", "BatchSource", "DistributedSetup", "Experiment", "Trainer", "capture_rng_state", "check_state_keys",
    "cosine_schedule", "latest_checkpoint", "load_checkpoint", "load_config", "move_to_device", "read_checkpoint",
    "register_method", "restore_rng_state", "run_config", "save_checkpoint", "seed_everything", "seeded_config",
]
