"""corrmark: semantic correspondence and unsupervised landmark discovery (JLAD, SFNet, SCorrSAN, C3).

Public API:
- ``load_matcher(name, **options)`` -> ``Matcher`` with ``estimate_mapping`` and ``transfer_keypoints``;
- ``load_landmark_model(name, checkpoint)`` -> ``LandmarkModel`` with ``detect``;
- ``read_image`` for paths, PIL images and arrays;
- ``corrmark.data.open_dataset`` and ``corrmark.eval`` for benchmarks.

Layers, lowest first. A module imports only from its own layer or the layers below it (tests/test_layers.py checks
every import, also those inside functions, against this table):

====== =========== ==================================================================================================
layer  name        modules
====== =========== ==================================================================================================
0      foundation  errors, registry, config, device, io, provenance, preprocess, cache, checkpoints, formats, bundled
1      ops         ops
2      backbones   backbones
3      data        data
4      models      models
5      losses      losses
6      viz         viz
7      eval        eval
8      train       train
9      application corrmark (this file), api, zoo, propagate, demo, bench
10     cli         cli, __main__
====== =========== ==================================================================================================

Training sits above evaluation because a trainer validates with the benchmark metrics (SCorrSAN selects its head by
PCK); evaluation never needs training code.
"""

from .errors import CorrmarkError
from .io import read_image
from .models import LandmarkModel, Matcher, available_matchers, load_landmark_model, load_matcher

__version__ = "0.2.0"

__all__ = ["CorrmarkError", "LandmarkModel", "Matcher", "available_matchers", "load_landmark_model", "load_matcher",
           "read_image"]
