"""JLAD training (``method: jlad``): synthetic-warp pretraining, then the alternating optimisation of Sec. 3.4.

The frozen backbone runs once: every training image gets ``views`` views (view 0 = the plain square resize, views
1.. = random synthetic warps from ``corrmark.data.synthetic``: affine + optional TPS + colour jitter, no mirror), and
the bank (``$CORRMARK_CACHE/jlad_features``) stores each view's frozen features (float16) and, for the warped views,
the ground-truth mapping from the view's feature grid into view 0's feature grid. Steps then run only ``JLADNet``.
With ``model.tune_block`` the bank stores, instead of the whole descriptor, the other backbones' maps (``features``)
and the DINOv2 tokens entering the tuned block (``tokens``, grid in ``meta["token_grid"]``); that block trains at
``train.backbone_lr`` (default ``lr / 10``) as part of W_F.

Schedule (``JLADSchedule``, a function of the global step, so resuming replays it exactly):

1. ``pretrain_steps`` steps on synthetic pairs (a warped view as the source, view 0 of the same image as the
   target): alignment with eq. (1) on the known dense mapping, detection with eq. (2) (equivariance under the known
   warp) plus concentration (8) and separation (9). Both sub-networks are trained at once; they share only ``W_F``.
2. ``rounds`` alternations (paper: at most 4) of two stages of ``stage_steps`` steps each, on *semantic* pairs (two
   different images of one group: two MTFL faces, two birds of one species, two PF-WILLOW images of one subclass):
   - alignment stage: ``{W_F, W_A, W_C}`` trained with eq. (11), ``(lambda_D, lambda_A, lambda_J) = (1, 10, 10)``;
   - detection stage: ``{W_F, W_D}`` trained with eq. (11), ``(10, 1, 100)``.
   The sub-networks outside a stage get ``requires_grad = False`` for that step (no gradient, no Adam update).
   ``synthetic_weight > 0`` adds the pretraining losses on a synthetic pair batch to every alternation step (a CPU
   stabiliser, not in the paper; default 0).

Learning rate: ``lr`` then x0.1 and x0.01 at ``lr_milestones`` (fractions of the total steps; the paper's
1e-3 -> 1e-4 -> 1e-5). No keypoints are used anywhere in training.

Config::

    method: jlad
    name: jlad_mtfl_k10
    seed: 0
    model: {backbone: dinov2_vits14, layers: [8], image_size: 224, num_landmarks: 10, radius: 5, ...}  # JLADConfig
    data:
      sources:   # corrmark.data.sources: dataset (mtfl | cub-unlabeled | image-folder | pf-willow | ...), root,
                 # split, limit, group
        - {dataset: mtfl, root: ../shared/data/mtfl, split: train, limit: 1000, group: face}
      views: 3
      warp: {rotation: 15, scale: [0.9, 1.9], tps_probability: 0.5, flip_probability: 0.0}   # WarpConfig
      batch_size: 8
      steps_per_epoch: 50
      data_seed: 0
      synthetic_batch: 0   # > 0: a synthetic pair batch of this size in every alternation step (with synthetic_weight)
    loss: {margin: null, concentration: 1.0, separation: 1.0, synthetic_alignment: 1.0, equivariance: 1.0,
           alignment_radius: 2, temperature: 0.1, synthetic_weight: 0.0, joint_normalize: false,
           alignment_stage: [1, 10, 10], detection_stage: [10, 1, 100]}
    schedule: {pretrain_steps: 300, stage_steps: 100, rounds: 2}
    train: {lr: 1e-3, lr_milestones: [0.6, 0.9], threads: 2, log_every: 10, checkpoint_every: 100,
            backbone_lr: 1e-4}   # backbone_lr: the tuned DINOv2 block (model.tune_block), also stepped down
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from ..cache import FeatureBank, cache_key
from ..config import check_known_keys
from ..data.sources import SourceImage, SourceRules, collect_source_images
from ..data.synthetic import SyntheticWarp, WarpConfig
from ..errors import CorrmarkError
from ..io import read_image
from ..losses.jlad import (ALIGNMENT_STAGE_WEIGHTS, DETECTION_STAGE_WEIGHTS, detection_loss, landmark_loss_options,
                           equivariance_loss, joint_loss, normalized_mapping, probabilistic_alignment_loss,
                           synthetic_alignment_loss, total_loss)
from ..models.jlad import FrozenFeatures, FrozenParts, JLADConfig, JLADNet, frozen_input
from ..ops import inside_map, pixel_grid, resize_mapping
from ..registry import register_trainer
from .runner import Experiment

BANK_VERSION = 1
STAGES = ("pretrain", "align", "detect")
DEFAULT_WARP = {"rotation": 15.0, "scale": (0.9, 1.9), "translation": 0.05, "tps_probability": 0.5,
                "tps_strength": 0.03, "flip_probability": 0.0}


CACHE_KIND = "jlad_features"  # folder under $CORRMARK_CACHE (corrmark.cache)


# --- schedule -------------------------------------------------------------------------------------------------------


@dataclass
class JLADSchedule:
    pretrain_steps: int = 300
    stage_steps: int = 100
    rounds: int = 2  # alternations (paper: at most 4)

    def __post_init__(self):
        if self.pretrain_steps < 0 or self.stage_steps < 0 or (self.rounds > 0 and self.stage_steps < 1):
            raise CorrmarkError("JLAD schedule: pretrain_steps >= 0 and stage_steps >= 1 when rounds > 0")
        if not 0 <= self.rounds <= 4:
            raise CorrmarkError(f"JLAD schedule: rounds must be 0..4 (the paper's maximum), got {self.rounds}")

    @classmethod
    def from_dict(cls, values: dict | None) -> JLADSchedule:
        check_known_keys(values, sorted(cls.__dataclass_fields__), "JLAD schedule")
        return cls(**{key: int(value) for key, value in (values or {}).items()})

    @property
    def total_steps(self) -> int:
        return self.pretrain_steps + 2 * self.rounds * self.stage_steps

    def stage(self, step: int) -> tuple[str, int]:
        """``(stage name, round)`` of the 0-based global ``step``: ``("pretrain", 0)``, ``("align", r)`` or
        ``("detect", r)`` with ``r`` = 1..rounds."""
        if step < self.pretrain_steps or self.rounds == 0:
            return "pretrain", 0
        offset = step - self.pretrain_steps
        round_index = min(offset // (2 * self.stage_steps), self.rounds - 1)
        within = offset - round_index * 2 * self.stage_steps
        return ("align" if within < self.stage_steps else "detect"), round_index + 1

    def to_dict(self) -> dict:
        return asdict(self)


# --- training images and the feature bank ---------------------------------------------------------------------------


#: JLAD's data sources (no annotation is read into training); the limit subset is seeded by [data_seed, source, 17]
SOURCE_RULES = SourceRules("JLAD", subset_salt=(17,), grouped=True)


def collect_training_images(sources: list[dict], data_seed: int) -> list[SourceImage]:
    """The images of the data sources (``corrmark.data.sources``), each with its group and (H, W)."""
    return collect_source_images(sources, data_seed, SOURCE_RULES)


def bank_key(model: JLADConfig, items: list[SourceImage], views: int, warp: dict, data_seed: int) -> str:
    description = {"version": BANK_VERSION, "backbone": model.backbone, "layers": model.layers,
                   "image_size": model.image_size, "images": [(item.path, item.group) for item in items],
                   "views": views, "warp": warp, "data_seed": data_seed}
    if model.tune_block:  # only then: the keys of the banks already on disk stay what they were
        description["tune_block"] = True
    return cache_key(description)


def build_bank(model: JLADConfig, items: list[SourceImage], views: int = 3, warp: dict | None = None,
               data_seed: int = 0, device="cpu", weights_files=None, cache: bool = True, progress: bool = True,
               chunk: int = 8, frozen: FrozenFeatures | None = None) -> FeatureBank:
    """Frozen features of ``views`` views of every image (and the true mappings of the warped views), or the cache:
    a ``FeatureBank`` with ``features`` (N * V, C, h, w) float16, ``mappings`` (N * V, h, w, 2) float32 (view grid ->
    view 0 grid, the identity for view 0), ``shapes`` (N, 2) original (H, W), ``paths``, ``size`` (square input).

    With ``model.tune_block``: ``features`` holds only the other backbones' maps (``FrozenParts.maps``), ``tokens``
    (N * V, 1 + h' * w', D) float16 the DINOv2 tokens entering the tuned block, ``meta["token_grid"]`` ``[h', w']``."""
    warp_values = {**DEFAULT_WARP, **dict(warp or {})}
    key = bank_key(model, items, views, warp_values, data_seed)
    return FeatureBank.load_or_build(
        CACHE_KIND, key, lambda: _extract_bank(model, items, views, warp_values, data_seed, key, device, weights_files,
                                               progress, chunk, frozen), cache)


def _extract_bank(model: JLADConfig, items: list[SourceImage], views: int, warp_values: dict, data_seed: int,
                  key: str, device, weights_files, progress: bool, chunk: int,
                  frozen: FrozenFeatures | None) -> FeatureBank:
    frozen = frozen or FrozenFeatures(model, device=device, weights_files=weights_files)
    size = frozen.input_size
    warper = SyntheticWarp(WarpConfig.from_dict(warp_values))
    started = time.perf_counter()
    features, mappings = [None] * (len(items) * views), [None] * (len(items) * views)
    tokens, token_grid = [None] * (len(items) * views), None
    for start in tqdm(range(0, len(items), chunk), desc="jlad features", disable=not progress, unit="batch"):
        batch = items[start:start + chunk]
        images = torch.cat([frozen.preprocess.to_input(read_image(item.path)) for item in batch])
        for view in range(views):
            if view == 0:
                view_images = images
                mapping = None
            else:
                generator = torch.Generator().manual_seed(int(data_seed) * 1_000_003 + start * 101 + view)
                out = warper.view(images, None, generator)
                view_images, mapping = out["image"], out["mapping"]
            with torch.no_grad():
                described = frozen(view_images.to(device))
            if isinstance(described, FrozenParts):
                view_tokens, token_grid = described.tokens.cpu(), list(described.grid)
                described = described.maps
            described = described.cpu()
            grid_hw = tuple(described.shape[-2:])
            if mapping is None:
                grid_mapping = pixel_grid(*grid_hw).expand(len(batch), *grid_hw, 2)
            else:
                grid_mapping = resize_mapping(mapping.float(), grid_hw, (size, size), grid_hw)
            for offset in range(len(batch)):
                row = (start + offset) * views + view
                features[row] = described[offset].to(torch.float16)
                mappings[row] = grid_mapping[offset].float()
                if token_grid is not None:
                    tokens[row] = view_tokens[offset].to(torch.float16)
    groups = sorted({item.group for item in items})
    tuned = {} if token_grid is None else {"tokens": torch.stack(tokens)}  # plain banks keep their stored layout
    return FeatureBank(features=torch.stack(features), **tuned, mappings=torch.stack(mappings),
                       groups=torch.tensor([groups.index(item.group) for item in items], dtype=torch.int64),
                       shapes=torch.tensor([tuple(item.shape) for item in items], dtype=torch.int64),
                       paths=[item.path for item in items], views=views, size=int(size),
                       meta={"key": key, "groups": groups, "images": len(items), "views": views,
                             "warp": warp_values, "seconds": round(time.perf_counter() - started, 1),
                             **({} if token_grid is None else {"token_grid": token_grid})})


def frozen_channels(bank: FeatureBank, model: JLADConfig) -> int:
    """Channels of the frozen features a bank stands for: its ``features``, plus the DINOv2 tokens' with
    ``tune_block`` (whose bank must then hold them, and only then)."""
    has_tokens = "tokens" in bank.fields
    if has_tokens != model.tune_block:
        raise CorrmarkError(f"JLAD tune_block is {model.tune_block} but the feature bank "
                            f"{'holds' if has_tokens else 'lacks'} the DINOv2 tokens of a tuned block")
    return bank.channels + (int(bank.tokens.shape[-1]) if has_tokens else 0)


# --- batches --------------------------------------------------------------------------------------------------------


class JLADBatches:
    """Deterministic batches for the schedule (a ``BatchSource``): synthetic pairs in pretraining, semantic pairs
    (two different images of one group, random views) in the alternation; ``synthetic_batch > 0`` adds a synthetic
    pair batch of that size to every alternation batch."""

    def __init__(self, bank: FeatureBank, schedule: JLADSchedule, batch_size: int = 8, steps_per_epoch: int = 50,
                 synthetic_batch: int = 0):
        self.bank, self.schedule = bank, schedule
        self.batch_size, self.steps, self.synthetic_batch = int(batch_size), int(steps_per_epoch), int(synthetic_batch)
        # with tune_block the frozen side of a pair is a dict (FrozenParts.from_batch): a tensor per image plus the grid
        self.token_grid = tuple(bank.meta["token_grid"]) if "tokens" in bank.fields else None
        groups = bank.groups.numpy()
        self.members = {int(g): np.flatnonzero(groups == g) for g in np.unique(groups)}
        self.usable = [g for g, members in self.members.items() if len(members) >= 2]
        if schedule.rounds > 0 and not self.usable:
            raise CorrmarkError("JLAD semantic pairs need a group with at least two images")
        if schedule.pretrain_steps > 0 and bank.views < 2:
            raise CorrmarkError("JLAD synthetic pretraining needs views >= 2 (view 0 plus warped views)")

    def __len__(self) -> int:
        return self.steps

    def _frozen(self, rows: torch.Tensor) -> torch.Tensor | dict:
        """The frozen input of bank ``rows``: features ``(B, C, h, w)``, or with tokens the dict of
        ``FrozenParts.from_batch`` (``maps``, ``tokens``, ``grid``)."""
        maps = self.bank.features[rows].float()
        if self.token_grid is None:
            return maps
        return {"maps": maps, "tokens": self.bank.tokens[rows].float(), "grid": self.token_grid}

    def _synthetic(self, rng: np.random.Generator, count: int) -> dict:
        views = self.bank.views
        images = rng.integers(self.bank.images, size=count)
        chosen_views = rng.integers(1, views, size=count)
        first = torch.as_tensor(images * views + chosen_views)
        second = torch.as_tensor(images * views)
        mapping = self.bank.mappings[first]
        return {"source": self._frozen(first), "target": self._frozen(second), "tau_true": mapping,
                "valid": inside_map(mapping, tuple(mapping.shape[1:3]))}

    def _semantic(self, rng: np.random.Generator, count: int) -> dict:
        views = self.bank.views
        first, second = [], []
        for _ in range(count):
            members = self.members[self.usable[int(rng.integers(len(self.usable)))]]
            a, b = rng.choice(len(members), 2, replace=False)
            view_a, view_b = rng.integers(views, size=2)
            first.append(int(members[a]) * views + int(view_a))
            second.append(int(members[b]) * views + int(view_b))
        return {"source": self._frozen(torch.as_tensor(first)), "target": self._frozen(torch.as_tensor(second))}

    def batches(self, seed: int, epoch: int):
        rng = np.random.default_rng([int(seed), int(epoch), 23])
        for position in range(self.steps):
            step = epoch * self.steps + position
            stage, round_index = self.schedule.stage(step)
            batch = {"stage": torch.tensor(STAGES.index(stage)), "round": torch.tensor(round_index)}
            if stage == "pretrain":
                batch["synthetic"] = self._synthetic(rng, self.batch_size)
            else:
                batch["pair"] = self._semantic(rng, self.batch_size)
                if self.synthetic_batch > 0:
                    batch["synthetic"] = self._synthetic(rng, self.synthetic_batch)
            yield batch


# --- the step -------------------------------------------------------------------------------------------------------

LOSS_DEFAULTS = {"margin": None, "concentration": 1.0, "separation": 1.0, "synthetic_alignment": 1.0,
                 "equivariance": 1.0, "alignment_radius": 2, "temperature": 0.1, "synthetic_weight": 0.0,
                 "joint_normalize": False,
                 "alignment_stage": list(ALIGNMENT_STAGE_WEIGHTS), "detection_stage": list(DETECTION_STAGE_WEIGHTS)}
#: sub-networks trained in each stage (Sec. 3.4)
TRAINED = {"pretrain": ("F", "A", "C", "D"), "align": ("F", "A", "C"), "detect": ("F", "D")}


#: what ``data:`` of a JLAD config may hold (a typo must fail before the feature bank is built)
DATA_KEYS = ("sources", "views", "warp", "batch_size", "steps_per_epoch", "data_seed", "synthetic_batch")


def loss_options(values: dict | None, num_landmarks: int) -> dict:
    return landmark_loss_options(values, LOSS_DEFAULTS, num_landmarks, "JLAD loss")


def set_trainable(net: JLADNet, stage: str) -> None:
    """``requires_grad`` on for the sub-networks the stage trains, off for the others."""
    for name, module in net.subnetworks().items():
        if module is not None:
            module.requires_grad_(name in TRAINED[stage])


class JLADStep:
    """The training step for every stage (picklable; loss options bound)."""

    def __init__(self, options: dict):
        self.options = options

    def synthetic_losses(self, net: JLADNet, batch: dict) -> dict:
        """Pretraining losses on a synthetic pair: eq. (1) for the alignment, eq. (2) + (8) + (9) for detection."""
        options = self.options
        out = net(frozen_input(batch["source"]), frozen_input(batch["target"]))
        alignment = synthetic_alignment_loss(out["tau"], batch["tau_true"], batch["valid"])
        grid_hw = tuple(batch["tau_true"].shape[1:3])
        # the source is the warped view: its landmarks carried into view 0 must meet view 0's landmarks (eq. 2)
        equivariance = equivariance_loss(out["detection_t"]["points_normalized"],
                                         out["detection_s"]["points_normalized"],
                                         normalized_mapping(batch["tau_true"], grid_hw))
        detection = self._detection(out)
        loss = (options["synthetic_alignment"] * alignment + options["equivariance"] * equivariance
                + detection["detection"])
        return {"loss": loss, "synthetic_alignment": alignment, "equivariance": equivariance,
                "concentration": detection["concentration"], "separation": detection["separation"]}

    def _detection(self, out: dict) -> dict:
        options = self.options
        parts = [detection_loss(out[side]["psi"], out[side]["points_normalized"], options["margin"],
                                options["concentration"], options["separation"])
                 for side in ("detection_s", "detection_t")]
        return {key: 0.5 * (parts[0][key] + parts[1][key]) for key in parts[0]}

    def joint_losses(self, net: JLADNet, batch: dict, stage: str) -> dict:
        """Eq. (11) on a semantic pair with the stage's weights."""
        options = self.options
        out = net(frozen_input(batch["source"]), frozen_input(batch["target"]))
        log_sigma = out["log_sigma"] if net.config.uncertainty else None
        alignment = probabilistic_alignment_loss(out["features_s"], out["features_t"], out["tau"], log_sigma,
                                                 int(options["alignment_radius"]), float(options["temperature"]))
        joint = joint_loss(out["detection_s"]["psi"], out["detection_t"]["psi"], out["tau"], log_sigma,
                           normalize_maps=bool(options["joint_normalize"]))
        detection = self._detection(out)
        weights = options["alignment_stage"] if stage == "align" else options["detection_stage"]
        loss = total_loss(detection["detection"], alignment, joint, tuple(float(w) for w in weights))
        return {"loss": loss, "alignment": alignment, "joint": joint, "concentration": detection["concentration"],
                "separation": detection["separation"], "mean_sigma": out["log_sigma"].exp().mean().detach(),
                "landmark_mass": out["detection_s"]["psi"].sum(dim=(-2, -1)).mean().detach()}

    def __call__(self, net: JLADNet, batch: dict) -> dict:
        stage = STAGES[int(batch["stage"])]
        set_trainable(net, stage)
        if stage == "pretrain":
            losses = self.synthetic_losses(net, batch["synthetic"])
        else:
            losses = self.joint_losses(net, batch["pair"], stage)
            if "synthetic" in batch and float(self.options["synthetic_weight"]) > 0:
                extra = self.synthetic_losses(net, batch["synthetic"])
                losses["loss"] = losses["loss"] + float(self.options["synthetic_weight"]) * extra["loss"]
                losses["synthetic"] = extra["loss"].detach()
        losses["stage"] = float(STAGES.index(stage))
        return losses


def step_schedule(total_steps: int, milestones=(0.6, 0.9), factor: float = 0.1):
    """``optimizer -> LambdaLR``: the base rate, times ``factor`` after each milestone (fractions of the steps)."""
    bounds = [int(round(float(m) * total_steps)) for m in milestones]

    def rate(step: int) -> float:
        return factor ** sum(step >= bound for bound in bounds)

    return lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, rate)


def adam_factory(net: JLADNet, lr: float, backbone_lr: float, weight_decay: float):
    """``params -> Adam``: the tuned DINOv2 block (if any) in a parameter group of its own at ``backbone_lr``,
    everything else at ``lr`` (the step schedule scales both)."""
    tuned = {id(p) for p in net.tuned_block.parameters()} if net.tuned_block is not None else set()

    def build(params):
        params = list(params)
        groups = [p for p in params if id(p) not in tuned]
        if tuned:
            groups = [{"params": groups}, {"params": [p for p in params if id(p) in tuned], "lr": backbone_lr}]
        return torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)

    return build


@register_trainer("jlad", source_rules=SOURCE_RULES)
def build_experiment(config: dict, device="cpu", bank: FeatureBank | None = None, progress: bool = True) -> Experiment:
    """``method: jlad`` -> Experiment (see the module docstring for the config). ``bank`` skips the feature bank
    (tests); ``progress`` shows the feature bar."""
    model_config = JLADConfig.from_dict(config.get("model"))
    config["model"] = model_config.to_dict()
    schedule = JLADSchedule.from_dict(config.get("schedule"))
    config["schedule"] = schedule.to_dict()
    data = dict(config.get("data") or {})
    check_known_keys(data, DATA_KEYS, "JLAD data")
    options = loss_options(config.get("loss"), model_config.num_landmarks)
    config["loss"] = options
    train = dict(config.get("train") or {})
    # a tuned block starts from the pretrained one, so its backbone is needed even when the bank is cached
    frozen = (FrozenFeatures(model_config, device=device, weights_files=config.get("weights_files"))
              if model_config.tune_block else None)
    if bank is None:
        if "sources" not in data:
            raise CorrmarkError("the JLAD config needs data.sources (training images)")
        data_seed = int(data.get("data_seed", 0))
        items = collect_training_images(data["sources"], data_seed)
        bank = build_bank(model_config, items, int(data.get("views", 3)), data.get("warp"), data_seed, device=device,
                          weights_files=config.get("weights_files"), progress=progress, frozen=frozen)
        config.setdefault("data_info", bank.meta)
    in_channels = frozen_channels(bank, model_config)
    if frozen is not None and frozen.channels != in_channels:
        raise CorrmarkError(f"the JLAD feature bank has {in_channels} channels, the backbone {frozen.channels}")
    torch.manual_seed(int(config.get("seed", 0)))  # the bank (or its cache) must not change the initial weights
    net = JLADNet(model_config, in_channels, frozen.trainable_block() if frozen is not None else None)
    batches = JLADBatches(bank, schedule, data.get("batch_size", 8), data.get("steps_per_epoch", 50),
                          int(data.get("synthetic_batch", 0)))
    steps = schedule.total_steps
    lr, weight_decay = float(train.get("lr", 1e-3)), float(train.get("weight_decay", 0.0))
    backbone_lr = float(train.get("backbone_lr", 0.1 * lr))
    return Experiment(
        model=net,
        optimizer_factory=adam_factory(net, lr, backbone_lr, weight_decay),
        step=JLADStep(options),
        data=batches,
        max_steps=steps,
        scheduler_factory=step_schedule(steps, train.get("lr_milestones", (0.6, 0.9))),
        grad_clip=train.get("grad_clip", 10.0),
    )
