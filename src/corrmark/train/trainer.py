"""A small, generic training loop in plain PyTorch, shared by every trained method (SFNet, SCorrSAN, JLAD, C3).

What it owns: the optimisation loop, seeding, tqdm progress with the running loss, a JSON-lines log, periodic atomic
checkpoints (model, optimizer, scheduler, step, epoch, RNG states, config, metrics) and exact resume, and mixed
precision (``precision``: the step function, forward and loss, runs under ``corrmark.device.autocast``; fp16 adds a
loss scaler, whose state the checkpoints carry). What the method supplies: the model, an optimizer factory, a
``step(model, batch) -> {"loss": tensor, ...}`` function and a data source.

Data sources implement :class:`BatchSource`: ``len(source)`` batches per epoch and ``source.batches(seed, epoch)``
yielding the same batches every time it is called with the same arguments (all randomness drawn from a generator
seeded by ``(seed, epoch)``, never from global state). Resuming mid-epoch replays the epoch's iterator up to the saved
position, so a resumed run sees exactly the batches an uninterrupted one sees; together with the restored optimizer
and RNG states the final weights are identical.

Distributed data parallel (``corrmark.train.distributed``, docs/DISTRIBUTED.md): under torchrun (or with an explicit
``DistributedSetup``) every rank trains on its share of each batch through DistributedDataParallel; only rank 0
writes the log, the checkpoints (the plain model's ``state_dict``, so they equal single-process ones in format) and
the progress bar. Without a distributed setup the loop below runs exactly as in a single process.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from ..device import DEFAULT_PRECISION, autocast, check_autocast, grad_scaler
from ..errors import CorrmarkError
from ..io import write_text_atomic
from .checkpoint import (FORMAT, VERSION, capture_rng_state, latest_checkpoint, load_checkpoint, restore_rng_state,
                         save_checkpoint, seed_everything, step_checkpoint_name)
from .distributed import (average_across_ranks, barrier, broadcast_from_main, device_for, process_group, resolve_setup,
                          shard_batch, wrap_step)

StepFunction = Callable[[torch.nn.Module, Any], dict]
FINAL_NAME = "final.pt"


class BatchSource(Protocol):
    """Deterministic batches: ``batches(seed, epoch)`` always yields the same ``len(self)`` batches."""

    def __len__(self) -> int: ...

    def batches(self, seed: int, epoch: int) -> Iterator[Any]: ...


def move_to_device(batch, device):
    """Tensors inside nested dicts / lists / tuples moved to ``device``; other values unchanged."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {key: move_to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(value, device) for value in batch)
    return batch


class Trainer:
    """Runs ``step`` over ``data`` for ``max_steps`` optimisation steps (or ``epochs`` full epochs).

    Args:
        model: the module whose ``state_dict`` is checkpointed (frozen parts should live outside it).
        optimizer_factory: ``params -> optimizer`` (called with the parameters that require gradients).
        step: ``(model, batch) -> dict`` of scalar tensors, ``"loss"`` is minimised, the others are logged.
        data: a :class:`BatchSource`.
        out_dir: folder for ``checkpoints/step_*.pt``, ``final.pt`` and ``log.jsonl``.
        max_steps / epochs: the budget (exactly one of them).
        scheduler_factory: optional ``optimizer -> LR scheduler`` stepped after every optimisation step.
        grad_clip: max gradient norm (None: no clipping).
        keep_checkpoints: how many ``step_*.pt`` files to keep (older ones are deleted; ``final.pt`` stays).
        config: the experiment config (plain dict) stored in every checkpoint.
        distributed: None = data parallel when launched by torchrun (WORLD_SIZE > 1), False = single process, or an
            explicit ``corrmark.train.distributed.DistributedSetup``.
        find_unused_parameters: passed to DistributedDataParallel; True (the default) allows steps that leave some
            parameters without a gradient (JLAD freezes a sub-network per stage).
        precision: ``fp32`` (default: no autocast, the numbers of code without the option), ``bf16`` or ``fp16``:
            ``step`` runs under ``corrmark.device.autocast``; the backward pass and the update stay outside it, and
            fp16 scales the loss (``corrmark.device.grad_scaler``; gradients are unscaled before clipping).
    """

    def __init__(self, model: torch.nn.Module, optimizer_factory: Callable, step: StepFunction, data: BatchSource,
                 out_dir, *, max_steps: int | None = None, epochs: int | None = None, device="cpu", seed: int = 0,
                 log_every: int = 10, checkpoint_every: int = 100, scheduler_factory: Callable | None = None,
                 grad_clip: float | None = None, keep_checkpoints: int = 2, config: dict | None = None,
                 progress: bool = True, description: str = "train", distributed=None,
                 find_unused_parameters: bool = True, precision: str | None = DEFAULT_PRECISION):
        if (max_steps is None) == (epochs is None):
            raise CorrmarkError("give the training budget as exactly one of max_steps or epochs")
        if len(data) < 1:
            raise CorrmarkError("the training data source yields no batches")
        self.distributed = resolve_setup(distributed)
        self.is_main = self.distributed is None or self.distributed.is_main
        self.find_unused_parameters = bool(find_unused_parameters)
        self.device = device_for(device, self.distributed)
        self.precision = check_autocast(self.device, precision)  # an unsupported one fails before any step
        self.scaler = grad_scaler(self.device, self.precision)  # fp16 only
        self.model = model.to(self.device)
        self.step_fn = step
        self.data = data
        self.steps_per_epoch = len(data)
        self.max_steps = int(max_steps) if max_steps is not None else int(epochs) * self.steps_per_epoch
        if self.max_steps < 1:
            raise CorrmarkError(f"the training budget must be at least one step, got {self.max_steps}")
        self.out_dir = Path(out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.seed = int(seed)
        self.log_every = max(1, int(log_every))
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.grad_clip = grad_clip
        self.keep_checkpoints = max(1, int(keep_checkpoints))
        self.config = dict(config or {})
        self.progress = progress and self.is_main
        self.description = description
        self.optimizer = optimizer_factory([p for p in self.model.parameters() if p.requires_grad])
        self.scheduler = scheduler_factory(self.optimizer) if scheduler_factory is not None else None
        self.step = 0
        self.metrics: dict = {}
        self.seconds = 0.0
        self._ddp_step = None  # batch -> losses through DistributedDataParallel, set inside a distributed fit

    # --- checkpoints ---------------------------------------------------------------------------------------------
    def state(self) -> dict:
        state = {
            "format": FORMAT, "version": VERSION,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "step": self.step, "epoch": self.step // self.steps_per_epoch,
            "rng": capture_rng_state(),
            "config": self.config,
            "metrics": dict(self.metrics, train_seconds=round(self.seconds, 2)),
        }
        if self.scaler is not None:  # fp16: the loss scale is part of the state an exact resume needs
            state["scaler"] = self.scaler.state_dict()
        return state

    def save(self, path: Path | None = None) -> Path:
        path = path or self.checkpoint_dir / step_checkpoint_name(self.step)
        if not self.is_main:  # the replicas are identical: rank 0's copy is the checkpoint
            return path
        save_checkpoint(path, self.state())
        if path.parent == self.checkpoint_dir:
            old = sorted(self.checkpoint_dir.glob("step_*.pt"))[:-self.keep_checkpoints]
            for stale in old:
                stale.unlink(missing_ok=True)
        return path

    def restore(self, path) -> None:
        payload = load_checkpoint(path, self.model, self.optimizer, self.scheduler, map_location=self.device)
        self.step = int(payload["step"])
        self.metrics = dict(payload.get("metrics") or {})
        self.seconds = float(self.metrics.pop("train_seconds", 0.0))
        restore_rng_state(payload["rng"])
        if self.scaler is not None and payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])

    # --- loop ------------------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, stop_after: int | None = None) -> Path:
        """Train to ``max_steps``; with ``resume`` continue from the latest checkpoint in ``out_dir`` (or start
        fresh when there is none). Returns the path of ``final.pt``.

        ``stop_after`` interrupts the run at that step (a checkpoint is written, its path returned), as a crash or a
        time-sliced job would; resuming later gives exactly the uninterrupted result (schedules keep the full budget).
        """
        stop_at = self.max_steps if stop_after is None else min(int(stop_after), self.max_steps)
        with process_group(self.distributed, self.device):
            return self._fit(resume, stop_at)

    def _fit(self, resume: bool, stop_at: int) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(self.seed)
        latest = latest_checkpoint(self.checkpoint_dir) if resume else None
        latest = broadcast_from_main(latest, self.distributed)  # every rank resumes from rank 0's choice
        if latest is not None:
            self.restore(latest)
        if self.is_main:
            self._tidy_after_interruption()
        if self.distributed is not None:
            self._ddp_step = wrap_step(self.model, self.step_fn, self.device, self.find_unused_parameters)
        log = open(self.out_dir / "log.jsonl", "a", encoding="utf-8") if self.is_main else None
        running, window = None, {}
        bar = tqdm(total=self.max_steps, initial=self.step, desc=self.description, disable=not self.progress,
                   unit="step", dynamic_ncols=True)
        try:
            while self.step < stop_at:
                epoch, position = divmod(self.step, self.steps_per_epoch)
                iterator = iter(self.data.batches(self.seed, epoch))
                for _ in range(position):  # replay to the saved position inside the epoch
                    next(iterator)
                for batch in iterator:
                    if self.step >= stop_at:
                        break
                    tick = time.perf_counter()
                    losses = self._optimise(batch)
                    self.seconds += time.perf_counter() - tick
                    self.step += 1
                    value = losses["loss"]
                    running = value if running is None else 0.95 * running + 0.05 * value
                    for key, item in losses.items():
                        window.setdefault(key, []).append(item)
                    bar.update(1)
                    bar.set_postfix(loss=f"{running:.4f}")
                    if self.step % self.log_every == 0 or self.step == self.max_steps:
                        self.metrics = {key: sum(items) / len(items) for key, items in window.items()}
                        self.metrics["running_loss"] = running
                        row = {"step": self.step, "epoch": self.step // self.steps_per_epoch,
                               "seconds": round(self.seconds, 2), **self.metrics}
                        if log is not None:
                            log.write(json.dumps(row) + "\n")
                            log.flush()
                        window = {}
                    if self.step % self.checkpoint_every == 0 and self.step < stop_at:
                        self.save()
        finally:
            bar.close()
            if log is not None:
                log.close()
        checkpoint = self.save()
        if self.step >= self.max_steps:
            checkpoint = self.save(self.out_dir / FINAL_NAME)
        barrier(self.distributed)  # no rank returns a path before rank 0 has written it
        return checkpoint

    def _tidy_after_interruption(self) -> None:
        """What a killed run leaves: temporary files of a checkpoint save it did not finish, and log rows past the
        step it resumes from (they are written again, so the log holds each step once)."""
        for folder in (self.out_dir, self.checkpoint_dir):
            for stale in folder.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
        log = self.out_dir / "log.jsonl"
        if log.is_file():
            kept = [line for line in log.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= self.step]
            write_text_atomic(log, "".join(f"{line}\n" for line in kept))

    def _optimise(self, batch) -> dict[str, float]:
        self.model.train()
        if self.distributed is not None:
            batch = shard_batch(batch, self.distributed.rank, self.distributed.world_size)
        batch = move_to_device(batch, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):  # forward and loss; a null context at fp32
            losses = self.step_fn(self.model, batch) if self._ddp_step is None else self._ddp_step(batch)
        if "loss" not in losses:
            raise CorrmarkError("the training step must return a dict with a 'loss' entry")
        loss = losses["loss"] if self.scaler is None else self.scaler.scale(losses["loss"])
        loss.backward()  # under DDP this also averages the gradients over the ranks
        values = {key: float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
                  for key, value in losses.items()}
        if self.distributed is not None:
            values = average_across_ranks(values, self.device)  # all ranks see (and judge) the same numbers
        if not math.isfinite(values["loss"]):  # checked before the update, so the weights stay finite
            raise CorrmarkError(f"training diverged: loss is {values['loss']} at step {self.step + 1}")
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip (and step with) the true gradients
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        if self.scaler is None:
            self.optimizer.step()
        else:  # skips the update when a gradient overflowed fp16, and adapts the scale
            self.scaler.step(self.optimizer)
            self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return values


def cosine_schedule(total_steps: int, warmup_steps: int = 0, final_ratio: float = 0.05) -> Callable:
    """``optimizer -> LambdaLR``: linear warm-up, then cosine decay to ``final_ratio`` of the base rate."""
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
