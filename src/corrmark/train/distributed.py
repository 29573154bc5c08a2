"""Distributed data-parallel training (PyTorch ``DistributedDataParallel``) for the common trainer.

One process per device (``torchrun --nproc_per_node N -m corrmark train CONFIG``); backend ``gloo`` on CPU, ``nccl``
on CUDA. Every rank builds the same model (same seed) and iterates the same deterministic batch source; each batch is
split along its first dimension and rank ``r`` trains on the ``r``-th part (:func:`shard_batch`). DDP averages the
gradients, so one optimisation step still consumes one batch of ``batch_size`` samples: the step count, the schedules
that depend on it and the learning rate mean what they mean in a single process. docs/DISTRIBUTED.md has the details.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..errors import CorrmarkError

DEFAULT_TIMEOUT_MINUTES = 120.0  # rank 0 may build a feature bank for a long time while the others wait


@dataclass(frozen=True)
class DistributedSetup:
    """Where this process sits in a distributed run.

    ``init_method`` is ``env://`` under torchrun (it sets MASTER_ADDR / MASTER_PORT) or e.g. ``tcp://host:port``.
    ``backend`` None picks gloo on CPU and nccl on CUDA.
    """

    world_size: int
    rank: int
    local_rank: int = 0
    init_method: str = "env://"
    backend: str | None = None
    timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES

    def __post_init__(self):
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise CorrmarkError(f"invalid distributed rank {self.rank} of world size {self.world_size}")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, environ=None) -> DistributedSetup | None:
        """The setup torchrun describes in WORLD_SIZE / RANK / LOCAL_RANK; None for a single process."""
        environ = os.environ if environ is None else environ
        try:
            world_size = int(environ.get("WORLD_SIZE", "1"))
            if world_size <= 1:
                return None
            rank = int(environ["RANK"])
            local_rank = int(environ.get("LOCAL_RANK", rank))
        except (KeyError, ValueError) as error:
            raise CorrmarkError(f"incomplete torchrun environment (WORLD_SIZE, RANK, LOCAL_RANK): {error}") from None
        return cls(world_size=world_size, rank=rank, local_rank=local_rank)


def resolve_setup(distributed) -> DistributedSetup | None:
    """The trainer's ``distributed`` argument: None = detect torchrun, False = single process, or a setup."""
    if distributed is None:
        return DistributedSetup.from_environment()
    if distributed is False:
        return None
    if isinstance(distributed, DistributedSetup):
        return distributed if distributed.world_size > 1 else None
    raise CorrmarkError(f"distributed must be None, False or a DistributedSetup, got {distributed!r}")


def device_for(device, setup: DistributedSetup | None) -> torch.device:
    """``cuda`` without an index becomes ``cuda:<local rank>`` in a distributed run (one GPU per process)."""
    device = torch.device(device)
    if setup is not None and device.type == "cuda" and device.index is None:
        return torch.device("cuda", setup.local_rank)
    return device


def backend_for(device: torch.device) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def start_process_group(setup: DistributedSetup, device) -> bool:
    """Initialise the default process group unless one exists; True when this call created it."""
    if dist.is_initialized():
        if dist.get_world_size() != setup.world_size or dist.get_rank() != setup.rank:
            raise CorrmarkError(f"a process group of rank {dist.get_rank()}/{dist.get_world_size()} exists, "
                                f"but this run is rank {setup.rank}/{setup.world_size}")
        return False
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # nccl binds the process to its current device
    dist.init_process_group(setup.backend or backend_for(device), init_method=setup.init_method,
                            world_size=setup.world_size, rank=setup.rank,
                            timeout=datetime.timedelta(minutes=setup.timeout_minutes))
    return True


@contextlib.contextmanager
def process_group(setup: DistributedSetup | None, device) -> Iterator[None]:
    """The default process group for the duration of the block (destroyed after it only if created here)."""
    created = setup is not None and start_process_group(setup, device)
    try:
        yield
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def barrier(setup: DistributedSetup | None) -> None:
    if setup is not None:
        dist.barrier()


def broadcast_from_main(value, setup: DistributedSetup | None):
    """Rank 0's ``value`` (any picklable object) on every rank."""
    if setup is None:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def average_across_ranks(values: dict[str, float], device) -> dict[str, float]:
    """The mean of each logged value over the ranks (every rank must report the same keys)."""
    keys = sorted(values)
    tensor = torch.tensor([values[key] for key in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    tensor /= dist.get_world_size()
    return dict(zip(keys, tensor.tolist()))


def shard_batch(batch, rank: int, world_size: int):
    """Rank ``rank``'s part of a batch: every tensor with at least one dimension is cut into ``world_size``
    contiguous chunks along dim 0 (``torch.tensor_split``: sizes differ by at most one); 0-d tensors and other
    values (stage tags, epoch fractions) go to every rank unchanged. Nested dicts / lists / tuples are followed."""
    if isinstance(batch, torch.Tensor):
        if batch.dim() == 0:
            return batch
        if batch.shape[0] < world_size:
            raise CorrmarkError(f"a batch of {batch.shape[0]} cannot be shared by {world_size} processes: use a "
                                f"batch size of at least {world_size} (ideally a multiple of it)")
        return torch.tensor_split(batch, world_size)[rank]
    if isinstance(batch, dict):
        return {key: shard_batch(value, rank, world_size) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(shard_batch(value, rank, world_size) for value in batch)
    return batch


class StepModule(torch.nn.Module):
    """A training step as one module's forward, so DDP wraps the whole step rather than the bare model.

    Step functions therefore keep the plain model (its attributes, sub-networks called directly such as
    ``MutualHeads.heads``, ``requires_grad`` switches) while every forward they run happens inside DDP's forward,
    which is what arms DDP's gradient synchronisation for the following backward.
    """

    def __init__(self, model: torch.nn.Module, step):
        super().__init__()
        self.model = model
        # not registered as a submodule: a step holding modules (a frozen teacher) must stay outside DDP
        object.__setattr__(self, "step", step)

    def forward(self, batch) -> dict:
        return self.step(self.model, batch)


def wrap_step(model: torch.nn.Module, step, device: torch.device, find_unused_parameters: bool = True):
    """``batch -> losses`` through DistributedDataParallel (one device per process)."""
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(StepModule(model, step), device_ids=device_ids,
                                   find_unused_parameters=find_unused_parameters)
