"""Distributed data-parallel training: 2 CPU processes (gloo) through the common trainer.

One ``torch.multiprocessing.spawn`` run (one interpreter start-up per rank keeps this fast): each rank first runs
``corrmark train`` in the environment torchrun gives its workers, then trains a toy model, a tiny JLAD net
(sub-networks frozen per stage) and tiny SCorrSAN mutual heads (sub-modules called directly by the step).
"""

import json
import os
import socket
from pathlib import Path

import pytest
import torch

from corrmark.errors import CorrmarkError
from corrmark.train import DistributedSetup, Trainer, load_checkpoint, read_checkpoint
from corrmark.train.distributed import resolve_setup, shard_batch, start_process_group

WORLD_SIZE = 2


class ToyData:
    """Linear-regression batches drawn from a generator seeded by (seed, epoch)."""

    def __init__(self, batches=4, size=8):
        self.count, self.size = batches, size

    def __len__(self):
        return self.count

    def batches(self, seed, epoch):
        generator = torch.Generator().manual_seed(seed * 1000 + epoch)
        for _ in range(self.count):
            x = torch.randn(self.size, 4, generator=generator)
            yield {"x": x, "y": x.sum(dim=1, keepdim=True), "tag": torch.tensor(epoch)}


def toy_model(dropout=0.0):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(dropout), torch.nn.Linear(8, 1))


def toy_step(model, batch):
    loss = torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])
    return {"loss": loss, "mse": loss.detach()}


def toy_trainer(out_dir, distributed, steps=6, dropout=0.0):
    return Trainer(toy_model(dropout), lambda params: torch.optim.SGD(params, lr=0.05), toy_step, ToyData(), out_dir,
                   max_steps=steps, log_every=1, checkpoint_every=2, progress=False, distributed=distributed,
                   config={"method": "toy"})


def jlad_trainer(out_dir, distributed):
    from test_jlad import tiny_bank, tiny_config

    from corrmark.train.jlad import build_experiment

    config = tiny_config(pretrain=2, stage=1, rounds=1, batch=2)  # pretrain, align (F, A, C), detect (F, D)
    experiment = build_experiment(config, bank=tiny_bank())
    return Trainer(experiment.model, experiment.optimizer_factory, experiment.step, experiment.data, out_dir,
                   max_steps=experiment.max_steps, scheduler_factory=experiment.scheduler_factory,
                   grad_clip=experiment.grad_clip, progress=False, distributed=distributed, config=config)


def mutual_heads_trainer(out_dir, distributed):
    from test_scorrsan import make_trainer

    trainer = make_trainer("mt", out_dir, steps=3)
    return Trainer(trainer.model, lambda params: torch.optim.Adam(params, lr=0.05), trainer.step_fn, trainer.data,
                   out_dir, max_steps=3, progress=False, distributed=distributed, config=trainer.config)


def _clone(state):
    return {key: value.detach().clone() for key, value in state.items()}


def _train_like_torchrun(rank, port, out_dir) -> dict:
    """``corrmark train CONFIG`` with the environment torchrun gives a worker (env:// rendezvous)."""
    from corrmark.cli import main
    from corrmark.train import register_method
    from corrmark.train.runner import Experiment

    built = {}

    def build(config, device):
        built["model"] = toy_model()
        built["initial"] = _clone(built["model"].state_dict())
        return Experiment(model=built["model"], optimizer_factory=lambda p: torch.optim.SGD(p, lr=0.05),
                          step=toy_step, data=ToyData(), max_steps=config["train"]["steps"])

    register_method("toy-ddp", build)
    torchrun = {"WORLD_SIZE": str(WORLD_SIZE), "RANK": str(rank), "LOCAL_RANK": str(rank),
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    os.environ.update(torchrun)
    try:
        code = main(["train", str(Path(out_dir) / "toy.yaml"), "--quiet"])
    finally:
        for name in torchrun:
            del os.environ[name]
    return {"code": code, "initial": built["initial"], "final": _clone(built["model"].state_dict()),
            "group_left": torch.distributed.is_initialized()}


def _replica(rank, ports, out_dir):
    """One rank: the CLI run (which creates and destroys its own group), then every trainer case through one
    process group created here (so the trainers must leave it alone)."""
    torch.set_num_threads(1)
    out_dir = Path(out_dir)
    results = {"cli": _train_like_torchrun(rank, ports[0], out_dir)}
    setup = DistributedSetup(world_size=WORLD_SIZE, rank=rank, init_method=f"tcp://127.0.0.1:{ports[1]}")
    assert start_process_group(setup, "cpu")
    for name, build in (("toy", toy_trainer), ("jlad", jlad_trainer), ("mutual", mutual_heads_trainer)):
        trainer = build(out_dir / name, setup)
        initial = _clone(trainer.model.state_dict())
        final = trainer.fit()
        results[name] = {"initial": initial, "final": _clone(trainer.model.state_dict()), "path": str(final)}
    straight = toy_trainer(out_dir / "straight", setup, dropout=0.3)
    straight.fit()
    toy_trainer(out_dir / "sliced", setup, dropout=0.3).fit(stop_after=3)
    resumed = toy_trainer(out_dir / "sliced", setup, dropout=0.3)
    resumed.fit(resume=True)
    results["straight"], results["resumed"] = straight.model.state_dict(), resumed.model.state_dict()
    results["group_kept"] = torch.distributed.is_initialized()
    torch.save(results, out_dir / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_same(first, second, exact=True):
    assert first.keys() == second.keys()
    for key in first:
        if exact:
            assert torch.equal(first[key], second[key]), key
        else:
            torch.testing.assert_close(first[key], second[key], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Two spawned CPU processes (gloo); each saves what it trained to ``rank<r>.pt``."""
    out_dir = tmp_path_factory.mktemp("ddp")
    (out_dir / "toy.yaml").write_text(f"method: toy-ddp\nseed: 0\noutput: {out_dir / 'cli'}\n"
                                      "train: {steps: 4, log_every: 1, checkpoint_every: 2, threads: 1}\n")
    ports = (free_port(), free_port())
    torch.multiprocessing.spawn(_replica, args=(ports, str(out_dir)), nprocs=WORLD_SIZE, join=True)
    return out_dir, [torch.load(out_dir / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]


def test_corrmark_train_in_a_torchrun_environment(two_ranks):
    out_dir, ranks = two_ranks
    runs = [rank["cli"] for rank in ranks]
    assert [run["code"] for run in runs] == [0, 0]
    assert_same(runs[0]["final"], runs[1]["final"])
    assert any(not torch.equal(runs[0]["initial"][k], runs[0]["final"][k]) for k in runs[0]["initial"])
    assert not any(run["group_left"] for run in runs)  # run_config destroyed the group it created
    model = toy_model()
    load_checkpoint(out_dir / "cli" / "final.pt", model)  # strict, in this single process
    assert_same(model.state_dict(), runs[0]["final"])
    assert len((out_dir / "cli" / "log.jsonl").read_text().splitlines()) == 4  # rank 0 alone wrote the log


@pytest.mark.parametrize("case", ["toy", "jlad", "mutual"])
def test_replicas_hold_identical_trained_weights(two_ranks, case):
    _, ranks = two_ranks
    assert_same(ranks[0][case]["final"], ranks[1][case]["final"])
    initial, final = ranks[0][case]["initial"], ranks[0][case]["final"]
    assert any(not torch.equal(initial[key], final[key]) for key in initial)
    # the checkpoint is the plain module's state dict: it loads strictly in a single process
    assert_same(read_checkpoint(ranks[1][case]["path"])["model"], final)


def test_jlad_every_sub_network_is_trained_under_ddp(two_ranks):
    _, ranks = two_ranks
    initial, final = ranks[0]["jlad"]["initial"], ranks[0]["jlad"]["final"]
    for prefix in ("feature_layers", "alignment", "uncertainty", "detector"):
        assert any(not torch.equal(initial[k], final[k]) for k in initial if k.startswith(prefix)), prefix


def test_two_halves_equal_one_process_on_the_whole_batch(two_ranks, tmp_path):
    _, ranks = two_ranks
    single = toy_trainer(tmp_path / "single", distributed=False)
    single.fit()
    assert_same(ranks[0]["toy"]["final"], single.model.state_dict(), exact=False)


def test_resume_under_ddp_equals_the_uninterrupted_run(two_ranks):
    _, ranks = two_ranks
    assert_same(ranks[0]["straight"], ranks[0]["resumed"])
    assert_same(ranks[0]["resumed"], ranks[1]["resumed"])
    assert all(rank["group_kept"] for rank in ranks)  # the trainers did not destroy a group they did not create


def test_only_rank_zero_writes_and_the_checkpoint_loads_strictly(two_ranks):
    out_dir, _ = two_ranks
    rows = [json.loads(line) for line in (out_dir / "toy" / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(1, 7))  # one writer: each step logged once
    model = toy_model()
    payload = load_checkpoint(out_dir / "toy" / "final.pt", model)
    assert payload["step"] == 6 and payload["config"]["method"] == "toy"


# --- pieces, no processes ---------------------------------------------------------------------------------------------


def test_shard_batch_splits_tensors_and_keeps_tags():
    batch = {"x": torch.arange(10).reshape(5, 2), "levels": [torch.arange(5), torch.zeros(5, 3)],
             "stage": torch.tensor(1), "epoch": 0.5}
    first, second = (shard_batch(batch, rank, 2) for rank in range(2))
    assert first["x"].tolist() == [[0, 1], [2, 3], [4, 5]] and second["x"].tolist() == [[6, 7], [8, 9]]
    assert second["levels"][0].tolist() == [3, 4] and isinstance(second["levels"], list)
    assert first["stage"] is batch["stage"] and second["epoch"] == 0.5
    with pytest.raises(CorrmarkError, match="batch size of at least 2"):
        shard_batch({"x": torch.zeros(1, 3)}, 1, 2)


def test_setup_from_the_torchrun_environment(monkeypatch):
    setup = DistributedSetup.from_environment({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert (setup.world_size, setup.rank, setup.local_rank, setup.is_main) == (4, 2, 0, False)
    assert DistributedSetup.from_environment({}) is None
    assert DistributedSetup.from_environment({"WORLD_SIZE": "1", "RANK": "0"}) is None
    with pytest.raises(CorrmarkError, match="torchrun environment"):
        DistributedSetup.from_environment({"WORLD_SIZE": "2"})
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert resolve_setup(None).rank == 1 and resolve_setup(False) is None
    with pytest.raises(CorrmarkError, match="invalid distributed rank"):
        DistributedSetup(world_size=2, rank=2)
