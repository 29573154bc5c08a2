"""corrmark: semantic correspondence and unsupervised landmark discovery (JLAD, SFNet, SCorrSAN, C3).

Public API:
- ``load_matcher(name, **options)`` -> ``Matcher`` with ``estimate_mapping`` and ``transfer_keypoints``;
- ``load_landmark_model(name, checkpoint)`` -> ``LandmarkModel`` with ``detect``;
- ``read_image`` for paths, PIL images and arrays;
- ``corrmark.data.open_dataset`` and ``corrmark.eval`` for benchmarks.
"""

from .errors import CorrmarkError
from .io import read_image
from .models import LandmarkModel, Matcher, available_matchers, load_landmark_model, load_matcher

__version__ = "0.2.0"

__all__ = ["CorrmarkError", "LandmarkModel", "Matcher", "available_matchers", "load_landmark_model", "load_matcher",
           "read_image"]
