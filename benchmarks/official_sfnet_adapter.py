"""Default adapter of ``benchmarks/speed_vs_official_sfnet.py``: runs the official SFNet code (a checkout of
github.com/cvlab-yonsei/SFNet that the user fetched; it is not part of corrmark and was not visible when this file
was written).

An adapter is a Python file exporting ``build(size, device, official) -> forward`` (and optionally
``dense_to_keypoints``, see the benchmark's docstring): ``size`` is the square input side, ``official`` the checkout's
folder; ``forward(source_batch, target_batch)`` takes two ``(1, 3, size, size)`` ImageNet-normalised float tensors and
returns the flow ``(1, h, w, 2)``: for every cell of the target's grid, the matching source position in ``[-1, 1]``
coordinates, ``(x, y)`` (``grid_sample``'s convention).

This one is written against the official repository's documented use, and assumes, numbered as its errors name them:

1. ``<official>/model.py`` exists and defines a class ``SFNet``.
2. ``model.py`` imports with torch, torchvision and numpy and the files of its own folder (the folder is put first on
   ``sys.path`` while it is imported).
3. ``SFNet(feature_h, feature_w, beta=50, kernel_sigma=5)`` constructs the model, with ``feature_h = feature_w =
   size // 16`` (the grid of ResNet-101's conv4 at stride 16: 20 x 20 at 320 px) and the paper's beta and kernel
   sigma; construction runs on the CPU (no hard-coded ``.cuda()``).
4. Its backbone is torchvision's ResNet-101, built during construction through ``torchvision.models.resnet101`` (or
   ``torchvision.models.resnet.resnet101``). While ``model.py`` is imported and the model constructed, that
   constructor is replaced by one that ignores ``pretrained`` / ``weights`` (random weights: the timing does not
   depend on them), and any download through ``torch.hub`` raises: nothing is downloaded. A model that never calls
   it does not have the same backbone, which is an error too.
5. ``model(source, target, train=False)``, in eval mode under ``torch.no_grad()``, runs on ``device`` (no hard-coded
   ``.cuda()`` when the device is the CPU) and returns a dict whose ``"grid_T2S"`` is the flow described above.

Whatever fails ends in one line naming the assumption; pass ``--adapter FILE.py`` (this file is a template) to call
the official code another way.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock

import torch

BETA = 50.0  # the paper's softmax temperature
KERNEL_SIGMA = 5.0  # the paper's Gaussian kernel std (cells)
FEATURE_STRIDE = 16  # ResNet-101 conv4
ASSUMPTIONS = {
    1: "<official>/model.py defines class SFNet",
    2: "model.py imports with torch, torchvision, numpy and its own folder",
    3: "SFNet(feature_h, feature_w, beta=50, kernel_sigma=5) constructs it on the CPU",
    4: "its backbone is torchvision.models.resnet101, built at construction, nothing downloaded",
    5: "model(source, target, train=False) runs on the device and returns a dict with 'grid_T2S'",
}


class AssumptionFailed(RuntimeError):
    """One line: which assumption of this adapter failed, why, and what to do instead."""

    def __init__(self, number: int, detail: str):
        super().__init__(f"default official SFNet adapter, assumption {number} ({ASSUMPTIONS[number]}) failed: "
                         f"{one_line(detail)}; pass --adapter FILE.py to call the official code another way "
                         f"(template: benchmarks/official_sfnet_adapter.py)")


def one_line(text) -> str:
    return " ".join(str(text).split()) or "(no message)"


def described(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def build(size: int, device, official) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The official SFNet for ``size`` px inputs on ``device``, with random ResNet-101 weights; see the module
    docstring for what is assumed."""
    model_file = Path(official) / "model.py"
    if not model_file.is_file():
        raise AssumptionFailed(1, f"{model_file} does not exist")
    feature_side = size // FEATURE_STRIDE
    with random_resnet101() as calls:
        module = import_model_file(model_file)
        if not hasattr(module, "SFNet"):
            raise AssumptionFailed(1, f"{model_file} has no SFNet")
        try:
            model = module.SFNet(feature_side, feature_side, beta=BETA, kernel_sigma=KERNEL_SIGMA)
        except DownloadRefused as error:
            raise AssumptionFailed(4, str(error)) from error
        except Exception as error:
            raise AssumptionFailed(3, described(error)) from error
    if not calls:
        raise AssumptionFailed(4, "constructing SFNet never called torchvision's resnet101")
    model = model.to(device).eval()

    def forward(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        try:
            with torch.no_grad():
                return model(source, target, train=False)["grid_T2S"]
        except Exception as error:
            raise AssumptionFailed(5, described(error)) from error

    return forward


def import_model_file(model_file: Path):
    """``model.py`` as a module (its folder first on ``sys.path`` meanwhile, for its own imports)."""
    spec = importlib.util.spec_from_file_location("official_sfnet_model", model_file)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(model_file.parent))
    try:
        spec.loader.exec_module(module)
    except DownloadRefused as error:
        raise AssumptionFailed(4, str(error)) from error
    except Exception as error:
        raise AssumptionFailed(2, described(error)) from error
    finally:
        sys.path.remove(str(model_file.parent))
    return module


class DownloadRefused(RuntimeError):
    pass


@contextmanager
def random_resnet101() -> Iterator[list]:
    """torchvision's ``resnet101`` builds random weights whatever it is asked; ``torch.hub`` downloads raise.
    Yields the list of calls made to it."""
    import torchvision.models
    import torchvision.models.resnet

    original = torchvision.models.resnet.resnet101
    calls = []

    def resnet101_random(*_legacy_positional, pretrained=None, weights=None, **options):
        calls.append({"pretrained": pretrained, "weights": str(weights) if weights is not None else None})
        return original(weights=None, **options)

    def refuse_download(url, *args, **kwargs):
        raise DownloadRefused(f"the model tried to download {url}")

    with ExitStack() as stack:
        for owner in (torchvision.models, torchvision.models.resnet):
            stack.enter_context(mock.patch.object(owner, "resnet101", resnet101_random))
        stack.enter_context(mock.patch("torch.hub.download_url_to_file", refuse_download))
        yield calls
