"""The common trainer: exact resume, seed determinism, strict checkpoint loading, weights_only checkpoints."""

import numpy as np
import pytest
import torch

from corrmark.errors import CheckpointError, CorrmarkError
from corrmark.train import (Trainer, capture_rng_state, latest_checkpoint, load_checkpoint, read_checkpoint,
                            register_method, restore_rng_state, run_config, save_checkpoint, seed_everything)
from corrmark.train.runner import Experiment


class ToyData:
    """Regression batches drawn from a generator seeded by (seed, epoch)."""

    def __init__(self, batches=5, size=8):
        self.count, self.size = batches, size

    def __len__(self):
        return self.count

    def batches(self, seed, epoch):
        generator = torch.Generator().manual_seed(seed * 1000 + epoch)
        for _ in range(self.count):
            x = torch.randn(self.size, 4, generator=generator)
            yield {"x": x, "y": x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(self.size, 1, generator=generator)}


def toy_model():
    # dropout makes the step depend on the global torch RNG, so resume must restore it
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))


def toy_step(model, batch):
    loss = torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])
    return {"loss": loss, "mse": loss.detach()}


def make_trainer(out_dir, max_steps, seed=3):
    torch.manual_seed(seed)
    return Trainer(toy_model(), lambda params: torch.optim.Adam(params, lr=1e-2), toy_step, ToyData(), out_dir,
                   max_steps=max_steps, seed=seed, log_every=2, checkpoint_every=3, progress=False,
                   config={"method": "toy", "lr": 1e-2})


def states_equal(first, second):
    assert first.keys() == second.keys()
    return all(torch.equal(first[key], second[key]) for key in first)


def test_resume_equals_uninterrupted_run(tmp_path):
    straight = make_trainer(tmp_path / "straight", 14)
    final = straight.fit()
    half = make_trainer(tmp_path / "resumed", 14)
    assert half.fit(stop_after=7).name == "step_00000007.pt"  # interrupted mid-epoch (5 batches per epoch)
    assert not (tmp_path / "resumed" / "final.pt").exists()
    resumed = make_trainer(tmp_path / "resumed", 14)
    resumed.fit(resume=True)
    assert resumed.step == 14
    assert states_equal(straight.model.state_dict(), resumed.model.state_dict())
    assert read_checkpoint(final)["step"] == 14


def test_same_seed_same_weights_and_loss_falls(tmp_path):
    first, second = make_trainer(tmp_path / "a", 30), make_trainer(tmp_path / "b", 30)
    first.fit()
    second.fit()
    assert states_equal(first.model.state_dict(), second.model.state_dict())
    rows = [line for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    import json

    losses = [json.loads(row)["loss"] for row in rows]
    assert losses[-1] < losses[0]


def test_checkpoint_is_weights_only_and_complete(tmp_path):
    trainer = make_trainer(tmp_path, 4)
    final = trainer.fit()
    payload = torch.load(final, weights_only=True)
    assert {"model", "optimizer", "step", "epoch", "rng", "config", "metrics"} <= set(payload)
    assert payload["config"]["lr"] == 1e-2 and payload["step"] == 4
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step_00000004.pt"


def test_strict_load_names_keys(tmp_path):
    model = toy_model()
    path = save_checkpoint(tmp_path / "ck.pt", {"model": {"0.weight": torch.zeros(16, 4), "extra.bias": torch.zeros(1)}})
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path, model)
    message = str(error.value)
    assert "missing keys" in message and "3.weight" in message and "unexpected keys: extra.bias" in message
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt", model)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "junk.pt", model)


def test_rng_state_roundtrip():
    import random

    seed_everything(5)
    state = capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    seed_everything(99)
    restore_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


def test_run_config_dispatch_and_resume(tmp_path):
    def build(config, device):
        return Experiment(model=toy_model(), optimizer_factory=lambda p: torch.optim.SGD(p, lr=config["lr"]),
                          step=toy_step, data=ToyData(), max_steps=config["train"]["steps"])

    register_method("toy-test", build)
    config = {"method": "toy-test", "seed": 1, "lr": 0.05, "train": {"steps": 6, "checkpoint_every": 4}}
    final = run_config(config, out_dir=tmp_path / "run", progress=False)
    again = run_config(config, out_dir=tmp_path / "run2", progress=False)
    assert states_equal(read_checkpoint(final)["model"], read_checkpoint(again)["model"])
    assert read_checkpoint(final)["config"]["method"] == "toy-test"
    with pytest.raises(CorrmarkError, match="unknown training method"):
        run_config({"method": "nope"}, out_dir=tmp_path / "x")


def test_resume_after_a_kill_keeps_each_log_row_once_and_removes_stale_temporary_files(tmp_path):
    import json

    run = tmp_path / "run"
    make_trainer(run, 14).fit(stop_after=7)
    for name in ("step_00000007.pt", "step_00000006.pt"):  # killed before these saves: it resumes from step 3
        (run / "checkpoints" / name).unlink(missing_ok=True)
    stale = run / "checkpoints" / ".step_00000009.pt.abc123.tmp"  # a save that a kill interrupted
    stale.write_bytes(b"partial")
    resumed = make_trainer(run, 14)
    resumed.fit(resume=True)
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) == [2, 4, 6, 8, 10, 12, 14]
    assert not stale.exists()
