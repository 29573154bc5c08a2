"""Experiment configs: ``base:`` inheritance, names from the file, ``--set`` overrides, and every checked-in config
resolving through its chain."""

from pathlib import Path

import pytest
import yaml

from corrmark.cli import main
from corrmark.config import apply_overrides, deep_merge, load_config_file
from corrmark.errors import CorrmarkError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_deep_merge_merges_mappings_and_replaces_the_rest():
    base = {"model": {"size": 224, "levels": [1, 2]}, "train": {"lr": 1e-3}}
    merged = deep_merge(base, {"model": {"levels": [3]}, "seed": 1})
    assert merged == {"model": {"size": 224, "levels": [3]}, "train": {"lr": 1e-3}, "seed": 1}
    assert base["model"]["levels"] == [1, 2]  # the base is not modified


def test_base_chain_names_and_outputs(tmp_path):
    write(tmp_path / "a.yaml", {"method": "sfnet", "name": "a", "output": "runs/a", "train": {"lr": 1, "steps": 10}})
    write(tmp_path / "sub" / "b.yaml", {"base": "../a.yaml", "train": {"lr": 2}})
    write(tmp_path / "sub" / "c.yaml", {"base": "b.yaml", "name": "see", "train": {"steps": 5}})
    b = load_config_file(tmp_path / "sub" / "b.yaml")
    assert b["train"] == {"lr": 2, "steps": 10} and b["method"] == "sfnet"
    assert b["name"] == "b" and "output" not in b  # never the base's name or output
    c = load_config_file(tmp_path / "sub" / "c.yaml")
    assert c["train"] == {"lr": 2, "steps": 5} and c["name"] == "see" and "base" not in c


def test_base_errors_are_one_line(tmp_path):
    write(tmp_path / "loop1.yaml", {"base": "loop2.yaml"})
    write(tmp_path / "loop2.yaml", {"base": "loop1.yaml"})
    with pytest.raises(CorrmarkError, match="loops back"):
        load_config_file(tmp_path / "loop1.yaml")
    write(tmp_path / "missing.yaml", {"base": "nowhere.yaml"})
    with pytest.raises(CorrmarkError, match="not found"):
        load_config_file(tmp_path / "missing.yaml")
    write(tmp_path / "bad.yaml", {"base": 5})
    with pytest.raises(CorrmarkError, match="file path"):
        load_config_file(tmp_path / "bad.yaml")


def test_overrides_parse_yaml_and_rename_the_run():
    config = {"method": "sfnet", "name": "x", "output": "runs/x", "train": {"steps": 10}}
    out = apply_overrides(config, ["train.steps=50", "data.limit=100", "model.levels=[[a, b]]"])
    assert out["train"]["steps"] == 50 and out["data"] == {"limit": 100} and out["model"]["levels"] == [["a", "b"]]
    assert out["name"] == "x__train.steps=50_data.limit=100_model.levels=-a-b" and "output" not in out
    assert config["train"]["steps"] == 10  # a copy
    renamed = apply_overrides(config, ["name=y", "seed=3"])
    assert renamed["name"] == "y" and "output" not in renamed  # runs/y, not the file's runs/x
    assert apply_overrides(config, ["output=elsewhere"]) == dict(config, output="elsewhere")
    for bad in ["steps", "=5", "train..steps=1", "train.steps.x=1"]:
        with pytest.raises(CorrmarkError):
            apply_overrides(config, [bad])


def test_every_checked_in_config_resolves():
    files = sorted(CONFIGS.rglob("*.yaml"))
    assert len(files) > 40
    for path in files:
        config = load_config_file(path)
        assert "base" not in config and config["name"]
        assert "method" in config or "dataset" in config, path


def test_cli_train_set_fails_cleanly_on_a_bad_override(tmp_path, capsys):
    config = write(tmp_path / "tiny.yaml", {"method": "sfnet"})
    assert main(["train", str(config), "--set", "train.steps"]) == 2
    assert "key.sub=value" in capsys.readouterr().err
