"""SFNet training: a cached bank of frozen features of augmented views, pair batches, the loss step.

On CPU the frozen backbones dominate the cost, so they run once: every training image gets ``views`` views (view 0 the
plain square resize, the others random synthetic warps with the same warp on the mask, flip and colour jitter,
``corrmark.data.synthetic``), and the bank stores each view's level features (float16) and its foreground mask on the
correlation grid. Training steps then run only the adaptation layers, the correlation and the losses.

Pairs (paper Sec. 4.2): with probability ``same_image_probability`` two different views of one image (a synthetic
deformation), otherwise views of two different images of the same group (e.g. two birds): the mask consistency loss
is what teaches flow across instances.

Config (``method: sfnet``)::

    model: {levels: [[dinov2_vits14:8, efficientnet_lite0:3], [efficientnet_lite0:4]], image_size: 224, ...}
    data:
      sources:   # corrmark.data.sources: dataset, root, split, limit, group (pairs are drawn inside a group;
                 # "@category" = each image's category, e.g. its folder in an image-folder), and SFNet's own
                 # masks (saliency | dataset: StanfordExtra's silhouettes), saliency_threshold
        - {dataset: cub-unlabeled, root: ../shared/data/cub-birds-unlabeled, split: train, limit: 800,
           masks: saliency, group: bird}
      views: 2
      warp: {rotation: 15, ...}   # corrmark.data.synthetic.WarpConfig
      batch_size: 8
      steps_per_epoch: 100
      same_image_probability: 0.5
      data_seed: 0     # fixes the image subset and the views (the feature cache key)
    loss: {mask: 3, flow: 16, smooth: 0.5}
    train: {steps: 1000, lr: 1e-3, weight_decay: 0, warmup: 50, threads: 2, log_every: 10, checkpoint_every: 100}
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..cache import FeatureBank, cache_key
from ..data.saliency import SaliencyMasks
from ..data.sources import SourceImage, SourceRules, collect_source_images
from ..data.synthetic import SyntheticWarp, WarpConfig
from ..errors import CorrmarkError, UnknownNameError
from ..io import read_image
from ..losses.sfnet import sfnet_loss
from ..models.sfnet import SFNetConfig, SFNetFeatures, SFNetHead
from ..preprocess import Preprocess
from ..registry import register_trainer
from .runner import Experiment
from .trainer import cosine_schedule

BANK_VERSION = 1
DEFAULT_SALIENCY_THRESHOLD = 0.6  # best fixed threshold on the StanfordExtra silhouettes (docs/SFNET.md)


CACHE_KIND = "sfnet_features"  # folder under $CORRMARK_CACHE (corrmark.cache)


# --- training images with masks -------------------------------------------------------------------------------------


MASK_SOURCES = ("saliency", "dataset")
#: SFNet's data sources: the limit subset is seeded by [data_seed, source number] alone (what the existing banks used)
SOURCE_RULES = SourceRules("SFNet", subset_salt=(), grouped=True,
                           options={"masks": "saliency", "saliency_threshold": DEFAULT_SALIENCY_THRESHOLD})


def collect_training_images(sources: list[dict], data_seed: int) -> list[SourceImage]:
    """The images of the data sources, each with its ``masks`` and ``saliency_threshold`` options (checked here,
    before the bank)."""
    images = collect_source_images(sources, data_seed, SOURCE_RULES)
    for image in images:
        masks = image.options["masks"]
        if masks not in MASK_SOURCES:
            raise UnknownNameError(f"unknown mask source {masks!r}; use {' or '.join(MASK_SOURCES)}")
        if masks == "dataset" and not hasattr(image.dataset, "mask"):
            raise CorrmarkError(f"data source {sources[image.source]['dataset']} has no masks; use masks: saliency")
    return images


def _mask_options(image: SourceImage) -> tuple[str, float]:
    """``(masks, saliency threshold)`` of an image, as the bank key has always recorded them."""
    return image.options["masks"], float(image.options["saliency_threshold"])


def _load_mask(image: SourceImage, pixels: np.ndarray, saliency) -> np.ndarray:
    masks, threshold = _mask_options(image)
    if masks == "dataset":
        return image.dataset.mask(image.index, pixels.shape[:2])
    return saliency.probability(pixels) >= threshold


# --- the feature bank -----------------------------------------------------------------------------------------------


def bank_key(model_config: SFNetConfig, images: list[SourceImage], views: int, warp: dict, data_seed: int) -> str:
    fields = {
        "version": BANK_VERSION, "levels": model_config.levels, "image_size": model_config.image_size,
        "images": [(image.path, image.group, *_mask_options(image)) for image in images],
        "views": views, "warp": warp, "data_seed": data_seed,
    }
    if model_config.source_scaling != "channels":  # the default stays out, so existing banks keep their keys
        fields["source_scaling"] = model_config.source_scaling
    return cache_key(fields)


def build_feature_bank(model_config: SFNetConfig, data: dict, device="cpu", weights_files=None,
                       cache: bool = True, progress: bool = True) -> FeatureBank:
    """Extract (or load from the cache) the features of ``views`` views of every training image."""
    data_seed = int(data.get("data_seed", 0))
    views = int(data.get("views", 2))
    warp_values = dict(data.get("warp") or {})
    items = collect_training_images(data["sources"], data_seed)
    key = bank_key(model_config, items, views, warp_values, data_seed)
    return FeatureBank.load_or_build(
        CACHE_KIND, key, lambda: _extract_bank(model_config, items, views, warp_values, data_seed, key, device,
                                               weights_files, progress), cache)


def _extract_bank(model_config: SFNetConfig, items: list[SourceImage], views: int, warp_values: dict,
                  data_seed: int, key: str, device, weights_files, progress: bool) -> FeatureBank:
    features = SFNetFeatures(model_config.levels, device=device, weights_files=weights_files,
                             source_scaling=model_config.source_scaling).eval()
    preprocess = Preprocess(model_config.image_size, features.size_multiple)
    warp = SyntheticWarp(WarpConfig.from_dict(warp_values))
    saliency = None
    if any(item.options["masks"] == "saliency" for item in items):
        saliency = SaliencyMasks(threads=max(1, torch.get_num_threads()))
    group_names = sorted({item.group for item in items})
    started = time.perf_counter()
    count = len(items)
    # filled in place, row = image * views + view: a bank of several GB must not be copied while it is assembled
    level_rows: list[torch.Tensor | None] = [None] * len(model_config.levels)
    mask_rows = None
    chunk = 8
    for start in tqdm(range(0, count, chunk), desc="sfnet features", disable=not progress, unit="batch"):
        batch_items = items[start:start + chunk]
        images, masks = [], []
        for item in batch_items:
            image = read_image(item.path)
            mask = _load_mask(item, image, saliency)
            images.append(preprocess.to_input(image)[0])
            masks.append(preprocess.resize_batch(torch.from_numpy(mask.astype(np.float32))[None, None])[0])
        images, masks = torch.stack(images), torch.stack(masks)
        for view in range(views):
            if view == 0:
                view_images, view_masks = images, masks
            else:
                generator = torch.Generator().manual_seed(data_seed * 1_000_003 + start * 97 + view)
                out = warp.view(images, masks, generator)
                view_images, view_masks = out["image"], out["mask"]
            with torch.no_grad():
                levels = features(view_images.to(device))
            grid = tuple(levels[0].shape[-2:])
            rows = torch.arange(start, start + len(batch_items)) * views + view
            for index, level in enumerate(levels):
                if level_rows[index] is None:
                    level_rows[index] = torch.empty((count * views, *level.shape[1:]), dtype=torch.float16)
                level_rows[index][rows] = level.cpu().to(torch.float16)
            pooled = F.adaptive_avg_pool2d(view_masks, grid).to(torch.float16)
            if mask_rows is None:
                mask_rows = torch.empty((count * views, *pooled.shape[1:]), dtype=torch.float16)
            mask_rows[rows] = pooled

    return FeatureBank(
        levels=level_rows, masks=mask_rows,
        groups=torch.tensor([group_names.index(item.group) for item in items], dtype=torch.int64), views=views,
        meta={"images": count, "groups": group_names, "seconds": round(time.perf_counter() - started, 1), "key": key,
              "mean_mask_fraction": float(mask_rows.float().mean())},
    )


# --- batches --------------------------------------------------------------------------------------------------------


class PairBatches:
    """Deterministic pair batches from a ``FeatureBank`` (a ``BatchSource``)."""

    def __init__(self, bank: FeatureBank, batch_size: int = 8, steps_per_epoch: int = 100,
                 same_image_probability: float = 0.5):
        self.bank, self.batch_size, self.steps = bank, int(batch_size), int(steps_per_epoch)
        self.same = float(same_image_probability)
        groups = bank.groups.numpy()
        self.members = {int(g): np.flatnonzero(groups == g) for g in np.unique(groups)}

    def __len__(self) -> int:
        return self.steps

    def sample_pairs(self, rng: np.random.Generator) -> tuple[list[int], list[int]]:
        views = self.bank.views
        first, second = [], []
        for _ in range(self.batch_size):
            image = int(rng.integers(self.bank.images))
            members = self.members[int(self.bank.groups[image])]
            if (rng.random() < self.same and views > 1) or len(members) < 2:
                other = image
                view_a, view_b = rng.choice(views, 2, replace=False) if views > 1 else (0, 0)
            else:
                other = int(members[rng.integers(len(members))])
                while other == image:
                    other = int(members[rng.integers(len(members))])
                view_a, view_b = int(rng.integers(views)), int(rng.integers(views))
            first.append(image * views + int(view_a))
            second.append(other * views + int(view_b))
        return first, second

    def gather(self, indices: list[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
        index = torch.tensor(indices)
        return [level[index].float() for level in self.bank.levels], self.bank.masks[index].float()

    def batches(self, seed: int, epoch: int):
        rng = np.random.default_rng([int(seed), int(epoch), 7])
        for _ in range(self.steps):
            first, second = self.sample_pairs(rng)
            source, source_mask = self.gather(first)
            target, target_mask = self.gather(second)
            yield {"source": source, "target": target, "source_mask": source_mask, "target_mask": target_mask}


def sfnet_step(head: SFNetHead, batch: dict, weights: dict | None = None) -> dict:
    out = head(batch["source"], batch["target"])
    return sfnet_loss(out["mapping_s2t"], out["mapping_t2s"], batch["source_mask"], batch["target_mask"], weights)


class _Step:
    """Picklable step function with the loss weights bound."""

    def __init__(self, weights):
        self.weights = weights

    def __call__(self, head, batch):
        return sfnet_step(head, batch, self.weights)


@register_trainer("sfnet", source_rules=SOURCE_RULES)
def build_experiment(config: dict, device="cpu", progress: bool = True) -> Experiment:
    """``method: sfnet`` -> Experiment (see the module docstring for the config); ``progress`` shows the feature
    bar."""
    model_config = SFNetConfig.from_dict(config.get("model"))
    config["model"] = model_config.to_dict()  # the checkpoint records the full model config
    data = dict(config.get("data") or {})
    if "sources" not in data:
        raise CorrmarkError("the SFNet config needs data.sources (training images)")
    train = dict(config.get("train") or {})
    bank = build_feature_bank(model_config, data, device=device, weights_files=config.get("weights_files"),
                              progress=progress)
    config.setdefault("data_info", bank.meta)
    # seeded here: building the bank (or loading it from the cache) must not change the initial weights
    torch.manual_seed(int(config.get("seed", 0)))
    head = SFNetHead(model_config, [level.shape[1] for level in bank.levels])
    batches = PairBatches(bank, data.get("batch_size", 8), data.get("steps_per_epoch", 100),
                          data.get("same_image_probability", 0.5))
    steps = int(train.get("steps", 1000))
    lr, weight_decay = float(train.get("lr", 1e-3)), float(train.get("weight_decay", 0.0))
    return Experiment(
        model=head,
        optimizer_factory=lambda params: torch.optim.Adam(params, lr=lr, weight_decay=weight_decay),
        step=_Step(dict(config.get("loss") or {})),
        data=batches,
        max_steps=steps,
        scheduler_factory=cosine_schedule(steps, int(train.get("warmup", 0))),
        grad_clip=train.get("grad_clip"),
    )
