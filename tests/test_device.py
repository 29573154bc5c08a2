"""Device names: auto picks what exists, anything unavailable or unknown is one CorrmarkError, in the API and CLI."""

import pytest
import torch

from corrmark.cli import main
from corrmark.device import resolve_device
from corrmark.errors import CorrmarkError


def test_auto_is_cuda_when_present_else_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected and resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name,message", [("gpu9", "unknown device 'gpu9'"), ("", "unknown device"),
                                          ("cuda:99", "not available"), ("meta", "not supported")])
def test_bad_devices_are_one_clear_error(name, message):
    if name == "cuda:99" and not torch.cuda.is_available():
        message = "no CUDA GPU"
    with pytest.raises(CorrmarkError, match=message):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cli_device_errors_are_one_line(capsys):
    assert main(["match", "a.png", "b.png", "--out", "unused", "--device", "cuda"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "no CUDA GPU" in error


def test_models_resolve_their_device():
    from corrmark import load_matcher

    with pytest.raises(CorrmarkError, match="unknown device"):
        load_matcher("nn", backbone="efficientnet_lite0", device="gpu9")
