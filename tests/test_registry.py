"""One registry per kind of name: registering, duplicates, unknown names, discovery of the package's modules, and the
command line and the zoo reading their names from it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from corrmark.errors import CorrmarkError, UnknownNameError
from corrmark.registry import (BACKBONES, IMAGE_DATASETS, LANDMARK_MODELS, MATCHERS, PAIR_DATASETS, TRAINERS, Entry,
                               Registry)


def test_register_is_a_decorator_that_returns_what_it_registers():
    widgets = Registry("widget")

    @widgets.register("beta", colour="red")
    def beta():
        return "b"

    widgets.add("alpha", str.upper)
    assert beta() == "b" and widgets["beta"] is beta
    assert "beta" in widgets and "gamma" not in widgets and 3 not in widgets
    assert list(widgets) == widgets.names() == ["alpha", "beta"] and len(widgets) == 2
    assert widgets.entry("beta").info == {"colour": "red"}
    assert widgets.get("gamma", "none") == "none"


def test_a_name_registered_twice_is_an_error_naming_both():
    widgets = Registry("widget")
    widgets.register("one")(test_register_is_a_decorator_that_returns_what_it_registers)
    with pytest.raises(CorrmarkError, match=r"widget 'one' is registered twice: by .*test_register_is_a.* and by "
                                            r".*test_a_name_registered_twice"):
        widgets.register("one")(test_a_name_registered_twice_is_an_error_naming_both)
    widgets.register("one")(test_register_is_a_decorator_that_returns_what_it_registers)  # the same definition
    widgets.add("one", len, replace=True)
    assert widgets["one"] is len


def test_an_unknown_name_is_one_line_listing_the_names():
    widgets = Registry("widget")
    widgets.add("b", len)
    widgets.add("a", len)
    with pytest.raises(UnknownNameError) as error:
        widgets["c"]
    assert str(error.value) == "unknown widget 'c'; available: a, b"
    assert isinstance(error.value, KeyError)
    with pytest.raises(UnknownNameError) as error:
        PAIR_DATASETS["pf-willo"]
    assert str(error.value) == f"unknown pair dataset 'pf-willo'; available: {', '.join(sorted(PAIR_DATASETS))}"


def test_dataset_names_are_normalised():
    assert " PF-Willow " in PAIR_DATASETS and "MTFL" in IMAGE_DATASETS


def test_discovery_imports_the_package_modules_on_the_first_lookup(tmp_path, monkeypatch):
    package = tmp_path / "corrmark_plugin_probe"
    package.mkdir()
    (package / "__init__.py").write_text("from corrmark.registry import Registry\n"
                                         "WIDGETS = Registry('widget', 'corrmark_plugin_probe')\n")
    (package / "alpha.py").write_text("from . import WIDGETS\n\n@WIDGETS.register('alpha')\ndef alpha():\n    pass\n")
    (package / "beta.py").write_text("from . import WIDGETS\nWIDGETS.add('beta', len)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [name for name in sys.modules if name.startswith("corrmark_plugin_probe")]:
        monkeypatch.delitem(sys.modules, name)
    import corrmark_plugin_probe

    assert "corrmark_plugin_probe.alpha" not in sys.modules  # nothing is imported before a lookup
    assert corrmark_plugin_probe.WIDGETS.names() == ["alpha", "beta"]
    assert "corrmark_plugin_probe.alpha" in sys.modules
    for name in [name for name in sys.modules if name.startswith("corrmark_plugin_probe")]:
        monkeypatch.delitem(sys.modules, name)


def test_every_method_has_its_entries():
    assert set(MATCHERS) == {"nn", "sfnet", "scorrsan", "jlad"}
    assert set(LANDMARK_MODELS) == {"jlad", "c3"}
    ours = {entry.name for entry in TRAINERS.entries()
            if (getattr(entry.target, "__module__", None) or "").startswith("corrmark.")}
    assert ours == {"sfnet", "scorrsan", "jlad", "c3"}  # other tests register toy methods of their own
    trained = {entry.name for entry in MATCHERS.entries() if entry.info["trained"]} | set(LANDMARK_MODELS)
    assert trained == ours, "every trained model is trained by a registered method"
    assert set(PAIR_DATASETS) == {"pf-willow", "pf-pascal", "spair-71k", "tss", "caltech-101", "stanfordextra",
                                  "pairs-file", "aflw-pairs"}
    assert set(IMAGE_DATASETS) == {"image-folder", "mtfl", "cub-unlabeled"}
    assert {"dinov2_vits14", "dinov2_vits14_s7", "efficientnet_lite0", "hub:dinov2_vits14", "timm:"} <= set(BACKBONES)


def test_the_entries_are_the_loaders_beside_each_model():
    from corrmark.data import MTFL, PFWillow
    from corrmark.models.c3 import load_c3_landmarks
    from corrmark.models.jlad import load_jlad_landmarks, load_jlad_matcher
    from corrmark.models.scorrsan import load_scorrsan
    from corrmark.models.sfnet import load_sfnet
    from corrmark.models.zero_shot import load_nn_matcher
    from corrmark.train import METHODS, sfnet

    assert [MATCHERS[name] for name in ("nn", "sfnet", "scorrsan", "jlad")] == [
        load_nn_matcher, load_sfnet, load_scorrsan, load_jlad_matcher]
    assert LANDMARK_MODELS["jlad"] is load_jlad_landmarks and LANDMARK_MODELS["c3"] is load_c3_landmarks
    assert MATCHERS.entry("scorrsan").info["checkpoint_hint"] == "final.pt or selected.pt"
    assert METHODS is TRAINERS and METHODS["sfnet"] is sfnet.build_experiment
    assert PAIR_DATASETS["pf-willow"] is PFWillow and IMAGE_DATASETS["mtfl"] is MTFL


def test_import_corrmark_discovers_nothing_until_a_name_is_looked_up():
    script = textwrap.dedent("""
        import sys
        import corrmark
        before = sorted(name for name in sys.modules if name.startswith(("corrmark.models.", "corrmark.train")))
        names = corrmark.available_matchers()
        print(before, names, "corrmark.models.sfnet" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split("] ", 1)[0] == "['corrmark.models.base'"
    assert result.stdout.strip().endswith("['jlad', 'nn', 'scorrsan', 'sfnet'] True")


def test_register_method_replaces_and_accepts_a_module_function_string(monkeypatch):
    from corrmark.train import register_method
    from corrmark.train.runner import _builder

    monkeypatch.setitem(TRAINERS._entries, "toy-registry", None)  # removed again after the test
    register_method("toy-registry", "corrmark.train.sfnet:build_experiment")
    from corrmark.train.sfnet import build_experiment

    assert _builder("toy-registry") is build_experiment and TRAINERS["toy-registry"] is build_experiment
    register_method("toy-registry", len)
    assert _builder("toy-registry") is len


@pytest.fixture
def toy_entries(monkeypatch):
    """A pair dataset and a landmark model registered for one test (removed after it)."""
    monkeypatch.setitem(PAIR_DATASETS._entries, "toy-pairs", Entry("toy-pairs", object))
    monkeypatch.setitem(LANDMARK_MODELS._entries, "toy-landmarks",
                        Entry("toy-landmarks", object, {"trained": True, "checkpoint_hint": "toy.pt"}))


def test_the_command_line_lists_the_registered_names(toy_entries, capsys):
    from corrmark.cli import main

    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    help_text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, also at hyphens
    assert f"oneof:{','.join(PAIR_DATASETS)}" in help_text and "toy-pairs" in help_text
    assert "matcher:jlad,nn,scorrsan,sfnet" in help_text
    with pytest.raises(SystemExit):
        main(["landmarks", "--help"])
    assert "landmarkmodel:c3,jlad,toy-landmarks" in "".join(capsys.readouterr().out.split())


def test_the_zoo_accepts_the_registered_trained_methods(toy_entries):
    import corrmark.zoo

    assert corrmark.zoo.METHODS == ("c3", "jlad", "scorrsan", "sfnet", "toy-landmarks")
    with pytest.raises(AttributeError):
        corrmark.zoo.NO_SUCH_NAME  # noqa: B018


def test_the_landmark_fit_configs_are_the_trainers_that_register_source_rules():
    from corrmark.cli.commands_landmarks import fit_config_rules
    from corrmark.train import c3, jlad

    assert fit_config_rules() == {"c3": c3.SOURCE_RULES, "jlad": jlad.SOURCE_RULES}

