"""``run_config``: train the experiment described by a YAML file (or dict), dispatching on its ``method:``.

Common config keys (every method)::

    method: sfnet            # a name in METHODS (the training-method registry)
    name: sfnet_cub          # run name; default output folder runs/<name>
    seed: 0
    output: runs/sfnet_cub   # optional output folder (overridden by run_config(out_dir=...))
    train: {steps: 1000, log_every: 10, checkpoint_every: 100, threads: null, precision: fp32, ...}

``train.precision`` (``fp32`` default, ``bf16``, ``fp16``): the trainer runs each step's forward and loss under
``corrmark.device.autocast`` (fp16 with a loss scaler); feature banks are built and stored as before.

Everything else is the method's own (``model:``, ``data:``, ``loss:``...). A method registers its builder
``(config: dict, device[, progress]) -> Experiment`` with ``@register_trainer("name")`` (``corrmark.registry``) in
``train/<method>.py``; ``register_method`` adds one from elsewhere, as a callable or a ``"module:function"``
string (imported on first use).
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import apply_overrides, load_config_file
from ..device import check_autocast
from ..errors import CorrmarkError
from ..registry import TRAINERS
from .checkpoint import seed_everything
from .distributed import DistributedSetup, barrier, device_for, process_group, resolve_setup
from .trainer import BatchSource, Trainer


@dataclass
class Experiment:
    """What a method hands to the trainer."""

    model: torch.nn.Module
    optimizer_factory: Callable
    step: Callable
    data: BatchSource
    max_steps: int | None = None
    epochs: int | None = None
    scheduler_factory: Callable | None = None
    grad_clip: float | None = None
    trainer_options: dict = field(default_factory=dict)  # log_every, checkpoint_every, keep_checkpoints, ...


METHODS = TRAINERS  # name -> builder; filled by @register_trainer in train/<method>.py


def register_method(name: str, builder: Callable | str) -> None:
    """Make ``method: name`` in configs build its experiment with ``builder(config, device)``, replacing an earlier
    builder of that name; ``builder`` may be a ``"module:function"`` string, imported on first use."""
    TRAINERS.add(str(name), builder, replace=True)


def _builder(method: str) -> Callable:
    builder = TRAINERS[method]
    if isinstance(builder, str):
        module, _, function = builder.partition(":")
        builder = getattr(importlib.import_module(module), function)
        TRAINERS.add(method, builder, replace=True)
    return builder


def load_config(path_or_dict, overrides=()) -> dict:
    """A deep copy of a config dict, or the YAML file's config (``base:`` merged, its path under ``config_file``;
    ``corrmark.config``), with ``overrides`` (``["train.steps=50"]``) applied."""
    if isinstance(path_or_dict, dict):
        return apply_overrides(path_or_dict, overrides)
    return apply_overrides(load_config_file(path_or_dict), overrides)


def seeded_config(path_or_dict, seed: int) -> dict:
    """The config with ``seed`` replaced, named and placed apart (``<name>_seed<N>``, ``<output>_seed<N>``) so a
    repeat never resumes from or overwrites the original run. The data seed is kept: only initialisation and batch
    order change."""
    config = load_config(path_or_dict)
    name = str(config.get("name") or config.get("method") or "run")
    config["output"] = f"{config.get('output') or Path('runs') / name}_seed{int(seed)}"
    config["name"] = f"{name}_seed{int(seed)}"
    config["seed"] = int(seed)
    return config


def run_config(path_or_dict, out_dir=None, resume: bool = False, device="cpu", progress: bool = True,
               stop_after: int | None = None, distributed=None) -> Path:
    """Train the experiment of a config; returns the path of the final checkpoint (``<out_dir>/final.pt``).

    ``resume=True`` continues from the latest checkpoint in the output folder; the result equals an uninterrupted run.
    ``stop_after=N`` interrupts after N steps (returns that step's checkpoint), e.g. to slice a long run.
    ``distributed``: None = data parallel when launched by torchrun, False = single process, or a
    ``DistributedSetup`` (docs/DISTRIBUTED.md).
    """
    setup = resolve_setup(distributed)
    device = device_for(device, setup)
    with process_group(setup, device):
        return _run(load_config(path_or_dict), out_dir, resume, device, progress, stop_after, setup)


def _run(config: dict, out_dir, resume: bool, device, progress: bool, stop_after: int | None,
         setup: DistributedSetup | None) -> Path:
    method = config.get("method")
    if not method:
        raise CorrmarkError("the config needs a 'method:' key (e.g. method: sfnet)")
    name = str(config.get("name") or method)
    out_dir = Path(out_dir or config.get("output") or Path("runs") / name)
    train = dict(config.get("train") or {})
    threads = train.get("threads") or os.environ.get("CORRMARK_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    precision = _precision(train, device)  # a bad value fails before the feature bank is built
    seed = int(config.get("seed", 0))
    seed_everything(seed)  # model initialisation is part of the run: same seed, same initial weights
    experiment = _build_rank_zero_first(_builder(str(method)), config, device, setup, progress)
    options = {"log_every": train.get("log_every", 10), "checkpoint_every": train.get("checkpoint_every", 100),
               "keep_checkpoints": train.get("keep_checkpoints", 2), "precision": precision}
    options.update(experiment.trainer_options)
    trainer = Trainer(experiment.model, experiment.optimizer_factory, experiment.step, experiment.data, out_dir,
                      max_steps=experiment.max_steps, epochs=experiment.epochs, device=device, seed=seed,
                      scheduler_factory=experiment.scheduler_factory, grad_clip=experiment.grad_clip,
                      config=_plain(config), progress=progress, description=name,
                      distributed=setup if setup is not None else False, **options)
    return trainer.fit(resume=resume, stop_after=stop_after)


def _precision(train: dict, device) -> str:
    """The checked ``train.precision`` (default fp32); an unknown or unsupported one is one error naming the key."""
    try:
        return check_autocast(device, train.get("precision"))
    except CorrmarkError as error:
        raise CorrmarkError(f"train.precision: {error}") from None


def _build_rank_zero_first(builder: Callable, config: dict, device, setup: DistributedSetup | None,
                           progress: bool = True) -> Experiment:
    """Rank 0 builds first (extracting and caching the frozen features); the other ranks then load the cache.
    A builder that takes ``progress`` is told whether to show its bars (only rank 0 shows them)."""
    if setup is not None and not setup.is_main:
        barrier(setup)
    options = {}
    if "progress" in inspect.signature(builder).parameters:
        options["progress"] = progress and (setup is None or setup.is_main)
    experiment = builder(config, device, **options)
    if setup is not None and setup.is_main:
        barrier(setup)
    return experiment


def _plain(value):
    """The config as plain python types (what ``torch.load(weights_only=True)`` accepts)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
