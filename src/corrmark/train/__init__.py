"""Training: the common ``Trainer``, checkpoints, and ``run_config`` (train from a YAML experiment config).

``run_config("configs/sfnet_cub.yaml")`` reads the config, looks its ``method:`` up in ``METHODS`` and trains.
A method registers an ``Experiment`` builder with :func:`register_method` (see ``corrmark.train.sfnet``).
Under ``torchrun`` the same calls train data-parallel (``corrmark.train.distributed``, docs/DISTRIBUTED.md).
"""

from .checkpoint import (capture_rng_state, check_state_keys, latest_checkpoint, load_checkpoint, read_checkpoint,
                         restore_rng_state, save_checkpoint, seed_everything)
from .distributed import DistributedSetup
from .runner import METHODS, Experiment, load_config, register_method, run_config, seeded_config
from .trainer import BatchSource, Trainer, cosine_schedule, move_to_device

register_method("scorrsan", "corrmark.train.scorrsan:build_experiment")
register_method("jlad", "corrmark.train.jlad:build_experiment")
register_method("c3", "corrmark.train.c3:build_experiment")

__all__ = [
    "METHODS", "BatchSource", "DistributedSetup", "Experiment", "Trainer", "capture_rng_state", "check_state_keys",
    "cosine_schedule", "latest_checkpoint", "load_checkpoint", "load_config", "move_to_device", "read_checkpoint",
    "register_method", "restore_rng_state", "run_config", "save_checkpoint", "seed_everything", "seeded_config",
]
