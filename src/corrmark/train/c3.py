"""C3 training (``method: c3``): unpaired random image pairs from one collection, cross-image cycle (docs/C3.md).

Data: the training images are read once, resized to ``data.load_size`` squares and kept in memory as uint8 (cached in
``$CORRMARK_CACHE/c3_images``). Every batch draws ``B`` pairs ``(a, b)`` of two different random images (no pairing,
no labels) and makes, from each image, on the fly and from a generator seeded by ``(seed, epoch, position)``:

- ``images``: a random *view* at ``model.image_size`` (zoom / rotation / shift / mirror of the whole image: the
  framing of the test faces is inside the zoom range);
- ``warped``: the view deformed by a random affine + TPS warp (``data.synthetic``), with its ``mapping`` (warped pixel
  -> view pixel);
- ``jittered``: the view with random colour jitter.

Step (``C3Step``; the weights are ``loss:`` options):

1. self reconstruction: ``G(app(warped), pose(jittered))`` must reconstruct ``images`` (perceptual + L1);
2. equivariance under the known warp: landmarks of ``warped`` carried by ``mapping`` meet those of ``jittered``;
3. concentration + separation (JLAD eqs. (8), (9)) on both detections;
4. flow supervision: the flow module on (``warped`` -> ``jittered``) against the known mapping;
5. from ``schedule.cross_start`` on (weights ramped up linearly over ``schedule.cross_ramp`` steps), on the pairs:
   the cross-image cycle (swap twice, ``x_a'`` vs ``x_a``, ``x_b'`` vs ``x_b``); flow photometric (the flow between
   the real ``a`` and ``b`` must warp ``x_ba`` (b's appearance in a's pose) onto ``b``, and ``x_ab`` onto ``a``);
   cross-image landmark equivariance through that flow, weighted by a forward-backward check of the flow at each
   landmark (``loss.flow_tolerance``).

``loss.cycle: 0, loss.flow: 0, loss.flow_photometric: 0, loss.flow_supervision: 0`` is the *baseline*: the same
network trained with the synthetic-pair terms 1-3 only (the paired setting C3 argues against).

Config::

    method: c3
    name: c3_mtfl_k10
    seed: 0
    model: {image_size: 64, num_landmarks: 10, ...}                      # C3Config
    data:
      sources: [{dataset: mtfl, root: ../shared/data/mtfl, split: train, limit: null}]   # corrmark.data.sources
      load_size: 96
      batch_size: 8
      steps_per_epoch: 100
      data_seed: 0
      view: {rotation: 10, scale: [1.0, 1.8], translation: 0.05, flip_probability: 0.5}   # WarpConfig
      deform: {rotation: 8, scale: [0.9, 1.1], tps_probability: 0.7, tps_strength: 0.04}
      jitter: {brightness: 0.3, contrast: 0.3, saturation: 0.3, hue: 0.05}
    loss: {reconstruction: 1, cycle: 1, perceptual: 1, pixel: 1, equivariance: 1, flow: 1, flow_supervision: 1,
           flow_photometric: 1, flow_detach: true, flow_tolerance: 0.125, concentration: 1, separation: 1,
           margin: null}
    schedule: {steps: 3000, cross_start: 600, cross_ramp: 600}
    train: {lr: 1e-3, threads: 2, log_every: 20, checkpoint_every: 500}
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch
from tqdm import tqdm

from ..cache import cache_key, load_or_build
from ..config import check_known_keys
from ..data.sources import SourceRules, collect_source_images
from ..data.synthetic import SyntheticWarp, WarpConfig, color_jitter
from ..errors import CorrmarkError
from ..io import read_image
from ..losses.c3 import (PerceptualDistance, ReconstructionDistance, cycle_loss, detection_loss,
                         equivariance_loss, flow_equivariance_loss, flow_photometric_loss, flow_supervision_loss)
from ..losses.jlad import landmark_loss_options
from ..models.c3 import C3Config, C3Net, split_code, swap_twice
from ..ops import pixel_to_normalized
from ..preprocess import Preprocess
from ..registry import register_trainer
from .runner import Experiment
from .trainer import cosine_schedule

CACHE_VERSION = 1
DEFAULT_VIEW = {"rotation": 10.0, "scale": (1.0, 1.8), "aspect": 0.05, "shear": 0.05, "translation": 0.05,
                "tps_probability": 0.0, "flip_probability": 0.5, "jitter": {}}
DEFAULT_DEFORM = {"rotation": 8.0, "scale": (0.9, 1.1), "aspect": 0.05, "shear": 0.05, "translation": 0.05,
                  "tps_probability": 0.7, "tps_strength": 0.04, "flip_probability": 0.0, "jitter": {}}
DEFAULT_JITTER = {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.05}
LOSS_DEFAULTS = {"reconstruction": 1.0, "cycle": 1.0, "perceptual": 1.0, "pixel": 1.0,
                 "perceptual_backbone": "efficientnet_lite0", "perceptual_layers": [0, 1, 2],
                 "equivariance": 1.0, "flow": 1.0, "flow_supervision": 1.0, "flow_photometric": 1.0,
                 "flow_detach": True, "flow_tolerance": 0.125, "concentration": 1.0, "separation": 1.0, "margin": None}
SCHEDULE_DEFAULTS = {"steps": 3000, "cross_start": 600, "cross_ramp": 600}


# --- the image collection in memory ---------------------------------------------------------------------------------


CACHE_KIND = "c3_images"  # folder under $CORRMARK_CACHE (corrmark.cache)


#: C3's data sources (no group: pairs are any two images); the limit subset is seeded by [data_seed, source, 41]
SOURCE_RULES = SourceRules("C3", subset_salt=(41,), min_images=2)


def collect_training_paths(sources: list[dict], data_seed: int) -> list[str]:
    """Image paths of the data sources (``corrmark.data.sources``; annotations are never read)."""
    return [image.path for image in collect_source_images(sources, data_seed, SOURCE_RULES)]


def load_collection(paths: list[str], load_size: int, cache: bool = True, progress: bool = True) -> torch.Tensor:
    """``(N, 3, load_size, load_size)`` uint8: every image resized once (antialiased), or the cached tensor."""
    def build() -> dict:
        preprocess = Preprocess(load_size)
        resized = torch.empty(len(paths), 3, load_size, load_size, dtype=torch.uint8)
        for index, image_path in enumerate(tqdm(paths, desc="c3 images", disable=not progress, unit="image")):
            image = preprocess.to_input(read_image(image_path))
            resized[index] = (image[0] * 255).round().to(torch.uint8)
        return {"images": resized, "paths": json.dumps(paths)}

    key = cache_key({"version": CACHE_VERSION, "size": int(load_size), "paths": paths})
    return load_or_build(CACHE_KIND, key, build, cache)["images"]


def _warp_config(defaults: dict, values: dict | None) -> WarpConfig:
    return WarpConfig.from_dict({**defaults, **dict(values or {})})


class C3Pairs:
    """Deterministic batches of unpaired image pairs (a ``BatchSource``); see the module docstring.

    Every batch: ``{"a": views, "b": views, "step": global step}``, where ``views`` holds ``images``, ``warped``,
    ``jittered`` ``(B, 3, S, S)`` and ``mapping`` ``(B, S, S, 2)`` (warped pixel -> view pixel); ``a[i]`` and
    ``b[i]`` are two different random images.
    """

    def __init__(self, images: torch.Tensor, image_size: int, batch_size: int = 8, steps_per_epoch: int = 100,
                 view: dict | None = None, deform: dict | None = None, jitter: dict | None = None):
        if len(images) < 2:
            raise CorrmarkError("C3 pairs need at least two images")
        self.images, self.size = images, int(image_size)
        self.batch_size, self.steps = int(batch_size), int(steps_per_epoch)
        self.view = SyntheticWarp(_warp_config(DEFAULT_VIEW, view))
        self.deform = SyntheticWarp(_warp_config(DEFAULT_DEFORM, deform))
        self.jitter = dict(DEFAULT_JITTER if jitter is None else jitter)

    def __len__(self) -> int:
        return self.steps

    def batch(self, seed: int, epoch: int, position: int) -> dict:
        """One batch, a function of ``(seed, epoch, position)`` only (so replaying an epoch is exact)."""
        state = np.random.SeedSequence([int(seed), int(epoch), int(position), 43]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        count = len(self.images)
        first = torch.randint(count, (self.batch_size,), generator=generator)
        second = (first + torch.randint(1, count, (self.batch_size,), generator=generator)) % count  # a != b
        originals = self.images[torch.cat([first, second])].float() / 255.0
        views = self.view.view(originals, None, generator, size_hw=(self.size, self.size))["image"]
        deformed = self.deform.view(views, None, generator)
        jittered = color_jitter(views, generator, self.jitter) if self.jitter else views
        both = {"images": views, "warped": deformed["image"], "mapping": deformed["mapping"], "jittered": jittered}
        halves = {key: value.chunk(2) for key, value in both.items()}
        # a and b as two parallel batches: a data-parallel split along dim 0 keeps every pair together
        return {"a": {key: value[0] for key, value in halves.items()},
                "b": {key: value[1] for key, value in halves.items()},
                "step": torch.tensor(epoch * self.steps + position)}

    def batches(self, seed: int, epoch: int):
        for position in range(self.steps):
            yield self.batch(seed, epoch, position)


# --- the step -------------------------------------------------------------------------------------------------------


def loss_options(values: dict | None, num_landmarks: int) -> dict:
    return landmark_loss_options(values, LOSS_DEFAULTS, num_landmarks, "C3 loss")


def schedule_options(values: dict | None) -> dict:
    options = dict(SCHEDULE_DEFAULTS)
    check_known_keys(values, options, "C3 schedule")
    options.update({key: int(value) for key, value in (values or {}).items()})
    if options["steps"] < 1 or options["cross_start"] < 0 or options["cross_ramp"] < 0:
        raise CorrmarkError("C3 schedule: steps >= 1, cross_start >= 0, cross_ramp >= 0")
    return options


def cross_weight(step: int, schedule: dict) -> float:
    """0 before ``cross_start``, then a linear ramp to 1 over ``cross_ramp`` steps (a function of the step, so a
    resumed run replays it)."""
    if step < schedule["cross_start"]:
        return 0.0
    return min(1.0, (step - schedule["cross_start"] + 1) / max(1, schedule["cross_ramp"]))


class C3Step:
    """The C3 (or baseline) training step; ``distance`` is the reconstruction distance (perceptual + pixel)."""

    def __init__(self, options: dict, schedule: dict, distance: ReconstructionDistance):
        self.options, self.schedule, self.distance = options, schedule, distance

    @property
    def uses_pairs(self) -> bool:
        return any(float(self.options[name]) > 0 for name in ("cycle", "flow", "flow_photometric"))

    def _detection(self, *detections) -> dict:
        options = self.options
        parts = [detection_loss(d["psi"], d["points"], options["margin"], options["concentration"],
                                options["separation"]) for d in detections]
        return {key: sum(part[key] for part in parts) / len(parts) for key in parts[0]}

    def synthetic_terms(self, net: C3Net, batch: dict) -> tuple[torch.Tensor, dict, dict]:
        """Terms 1-4 (the synthetic pair of every image); returns (weighted sum, logged values, the code)."""
        options = self.options
        images, warped, mapping = batch["images"], batch["warped"], batch["mapping"]
        code = net.encode(warped, pose_images=batch["jittered"])
        pose, warped_detection = code["pose_detection"], code["appearance_detection"]
        reconstruction = self.distance(net.generate(code, code), images)
        size = tuple(images.shape[-2:])
        equivariance = equivariance_loss(pose["points"], warped_detection["points"], pixel_to_normalized(mapping, size))
        detection = self._detection(pose, warped_detection)
        loss = (float(options["reconstruction"]) * reconstruction["total"]
                + float(options["equivariance"]) * equivariance + detection["detection"])
        logged = {"reconstruction": reconstruction["total"], "perceptual": reconstruction["perceptual"],
                  "pixel": reconstruction["pixel"], "equivariance": equivariance,
                  "concentration": detection["concentration"], "separation": detection["separation"]}
        if float(options["flow_supervision"]) > 0:
            supervision = flow_supervision_loss(net.flow(warped, batch["jittered"]), mapping, size)
            loss = loss + float(options["flow_supervision"]) * supervision
            logged["flow_supervision"] = supervision
        return loss, logged, code

    def pair_terms(self, net: C3Net, batch: dict, code: dict) -> tuple[torch.Tensor, dict]:
        """Term 5 on the unpaired pairs ``(a, b)`` (``batch`` and ``code`` hold the a's, then the b's): cycle, flow
        photometric, flow equivariance, weighted by their options (the caller applies the ramp)."""
        options = self.options
        images_a, images_b = batch["images"].chunk(2)
        code_a, code_b = split_code(code)
        swapped = swap_twice(code_a, code_b, net.encode, net.generate)
        cycle = cycle_loss(images_a, images_b, swapped["a_cycled"], swapped["b_cycled"], self.distance)
        loss = float(options["cycle"]) * cycle["total"]
        logged = {"cycle": cycle["total"], "cycle_pixel": cycle["pixel"]}
        if float(options["flow"]) > 0 or float(options["flow_photometric"]) > 0:
            # both directions at once: targets (b, a), sources (a, b); mapping on the target, values in the source
            mapping = net.flow(torch.cat([images_b, images_a]), torch.cat([images_a, images_b]))
            generated_sources = torch.cat([swapped["ba"], swapped["ab"]]).detach()  # a's pose / b's pose
            photometric = flow_photometric_loss(generated_sources, torch.cat([images_b, images_a]), mapping)
            points_a, points_b = code_a["points"], code_b["points"]
            # the other direction of every pair (targets a, b) serves as the forward-backward check
            mapping_back = torch.cat(mapping.chunk(2)[::-1])
            equivariance = flow_equivariance_loss(torch.cat([points_a, points_b]), torch.cat([points_b, points_a]),
                                                  mapping, mapping_back, float(options["flow_tolerance"]),
                                                  detach_flow=bool(options["flow_detach"]))
            loss = (loss + float(options["flow_photometric"]) * photometric
                    + float(options["flow"]) * equivariance["loss"])
            logged.update(flow_photometric=photometric, flow_equivariance=equivariance["loss"],
                          flow_trust=equivariance["trust"])
        return loss, logged

    def __call__(self, net: C3Net, batch: dict) -> dict:
        batch = {key: torch.cat([batch["a"][key], batch["b"][key]]) for key in batch["a"]} | {"step": batch["step"]}
        loss, logged, code = self.synthetic_terms(net, batch)
        ramp = cross_weight(int(batch["step"]), self.schedule) if self.uses_pairs else 0.0
        if ramp > 0:
            pair_loss, pair_logged = self.pair_terms(net, batch, code)
            loss = loss + ramp * pair_loss
            logged.update(pair_logged)
        logged = {key: value.detach() for key, value in logged.items()}
        return {"loss": loss, "cross_weight": ramp, **logged}


# --- experiment -----------------------------------------------------------------------------------------------------


@register_trainer("c3", source_rules=SOURCE_RULES)
def build_experiment(config: dict, device="cpu", images: torch.Tensor | None = None,
                     perceptual: bool | None = None, progress: bool = True) -> Experiment:
    """``method: c3`` -> Experiment (module docstring). ``images`` (uint8 ``(N, 3, L, L)``) skips reading the
    sources (tests); ``perceptual=False`` drops the perceptual term (tests); ``progress`` shows the image bar."""
    model_config = C3Config.from_dict(config.get("model"))
    config["model"] = model_config.to_dict()
    options = loss_options(config.get("loss"), model_config.num_landmarks)
    config["loss"] = options
    schedule = schedule_options(config.get("schedule"))
    config["schedule"] = schedule
    data = dict(config.get("data") or {})
    train = dict(config.get("train") or {})
    if images is None:
        if "sources" not in data:
            raise CorrmarkError("the C3 config needs data.sources (training images)")
        started = time.perf_counter()
        paths = collect_training_paths(data["sources"], int(data.get("data_seed", 0)))
        images = load_collection(paths, int(data.get("load_size", model_config.image_size)), progress=progress)
        config.setdefault("data_info", {"images": len(paths), "load_seconds": round(time.perf_counter() - started, 1)})
    use_perceptual = float(options["perceptual"]) > 0 if perceptual is None else perceptual
    network = None
    if use_perceptual:
        network = PerceptualDistance(options["perceptual_backbone"], options["perceptual_layers"], device=device)
    distance = ReconstructionDistance(network, options["perceptual"], options["pixel"])
    torch.manual_seed(int(config.get("seed", 0)))  # reading the images must not change the initial weights
    net = C3Net(model_config)
    pairs = C3Pairs(images, model_config.image_size, data.get("batch_size", 8), data.get("steps_per_epoch", 100),
                    data.get("view"), data.get("deform"), data.get("jitter"))
    lr, steps = float(train.get("lr", 1e-3)), schedule["steps"]
    warmup, final_ratio = int(train.get("warmup_steps", 0)), float(train.get("final_lr_ratio", 0.05))
    return Experiment(
        model=net,
        optimizer_factory=lambda params: torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999)),
        step=C3Step(options, schedule, distance),
        data=pairs,
        max_steps=steps,
        scheduler_factory=cosine_schedule(steps, warmup, final_ratio),
        grad_clip=train.get("grad_clip", 5.0),
    )
