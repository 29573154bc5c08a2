"""SCorrSAN training (``method: scorrsan``): baseline, single offline teacher (ST) and mutual online teachers (MT).

Frozen descriptors of every training image (and its mirror for faces) are cached once (``data.keypoint_pairs``);
a step runs only the head (SCE + fusion), the correlation and the losses.

- ``variant: none`` (the baseline / teacher): sparse keypoint loss only (paper eq. 4).
- ``variant: st``: a frozen teacher (``teacher:`` = a baseline ``final.pt``) gives pseudo-labels; the student starts
  from scratch; loss = sparse + ``weight`` * pseudo (eq. 16-18).
- ``variant: mt``: two heads trained together, each the other's teacher (eqs. 19-22); loss = L_a + L_b. After
  training :func:`select_mutual_head` scores both on the validation pairs and writes ``selected.pt`` (the matcher then
  uses the better head).

The pseudo-label loss is evaluated on the fine (``upsample``-times) target grid inside the keypoint mask dilated by a
``dilation x dilation`` box (``dilation: 0`` = no spatial prior: ``max_positions`` random fine cells of the whole
image), keeping per pair the smallest-loss fraction ``selection_ratio(epoch)`` of those cells (``selection: null`` =
keep all).

Config::

    method: scorrsan
    name: scorrsan_faces_baseline
    seed: 0
    model: {image_size: 224, sce: true, sce_kernel: 7, channels: 256, upsample: 4, sigma: 2.0, ...}  # ScorrsanConfig
    data:
      dataset: mtfl            # mtfl | pf-willow | stanfordextra
      root: ../shared/data/mtfl
      limit: 1000              # mtfl: training faces (seeded by data_seed)
      views: 2                 # mtfl: plain + mirrored; pf-willow: each pair plain or with both images mirrored
      batch_size: 8
      steps_per_epoch: 100     # mtfl random pairs; pf-willow / stanfordextra use their fixed train pairs
      data_seed: 0
      validation: {limit: 200} # mtfl: held-out training faces for MT head selection (pf-willow: the train pairs)
      held_out_breed: 0        # stanfordextra: the breed left out (name or index, see stanfordextra_fold)
    teacher_student:
      variant: none            # none | st | mt
      teacher: runs/scorrsan_faces_baseline/final.pt   # st only
      weight: 10.0
      dilation: 7
      selection: {start: 0.5, end: 1.0, ramp_epochs: 10}
      max_positions: 512
    train: {steps: 1000, lr: 3e-4, weight_decay: 0.01, warmup: 50, threads: 1, log_every: 10, checkpoint_every: 100}
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..cache import FeatureBank
from ..config import check_known_keys
from ..data.keypoint_pairs import (FixedPairs, RandomPairs, build_keypoint_bank, face_test_pairs, mtfl_images,
                                   pfwillow_images, stanfordextra_fold)
from ..errors import CorrmarkError, UnknownNameError
from ..eval.interocular import InterOcularPCK
from ..eval.pck import PCKAccumulator, PCKProtocol
from ..losses.scorrsan import (dilate_mask, keypoint_mask, mask_positions, pseudo_label_loss, selection_ratio,
                               sparse_flow_loss)
from ..models.scorrsan import MutualHeads, ScorrsanConfig, ScorrsanHead, head_from_checkpoint
from ..preprocess import resize_points
from ..registry import register_trainer
from .checkpoint import read_checkpoint, save_checkpoint
from .runner import Experiment
from .trainer import cosine_schedule

VARIANTS = ("none", "st", "mt")
TS_DEFAULTS = {"variant": "none", "teacher": None, "weight": 10.0, "dilation": 7,
               "selection": {"start": 0.5, "end": 1.0, "ramp_epochs": 10}, "max_positions": 512}


def teacher_student_options(values: dict | None) -> dict:
    options = dict(TS_DEFAULTS)
    check_known_keys(values, options, "teacher_student")
    options.update(values or {})
    if options["variant"] not in VARIANTS:
        raise CorrmarkError(f"teacher_student.variant must be one of {', '.join(VARIANTS)}, got {options['variant']!r}")
    if options["variant"] == "st" and not options["teacher"]:
        raise CorrmarkError("teacher_student.variant st needs teacher: <baseline final.pt>")
    return options


# --- data -----------------------------------------------------------------------------------------------------------


def _root(data: dict) -> str:
    if "root" not in data:
        raise CorrmarkError("the SCorrSAN config needs data.root")
    return os.path.expandvars(str(data["root"]))


def training_data(data: dict, model: ScorrsanConfig, device="cpu", weights_files=None, progress=True):
    """``(bank, batch source, validation)``; validation = ``(bank, pairs)`` used to pick the MT head."""
    kind = str(data.get("dataset", "mtfl")).lower()
    seed = int(data.get("data_seed", 0))
    batch_size = int(data.get("batch_size", 8))

    def bank(items, views=1):
        return build_keypoint_bank(items, model.backbone, model.layers, model.image_size, views=views, device=device,
                                   weights_files=weights_files, progress=progress)

    if kind == "mtfl":
        root = _root(data)
        items = mtfl_images(root, "train", data.get("limit", 1000), seed)
        train_bank = bank(items, int(data.get("views", 2)))
        source = RandomPairs(train_bank, batch_size, int(data.get("steps_per_epoch", 100)))
        validation = None
        val = data.get("validation")
        if val:
            val_items = mtfl_images(root, "train", int(val.get("limit", 200)), seed + 1,
                                    exclude=[item.path for item in items])
            _, pairs = face_test_pairs(len(val_items), len(val_items), seed)
            validation = (bank(val_items), pairs)
        return train_bank, source, validation
    if kind == "pf-willow":
        items, pairs, _ = pfwillow_images(_root(data), str(data.get("split", "train")))
        views = int(data.get("views", 1))
        if views == 2:  # mirrored pairs: both images mirrored together, so every keypoint keeps its partner
            items = [replace(item, flip=list(range(len(item.points)))) for item in items]
        train_bank = bank(items, views)
        return train_bank, FixedPairs(train_bank, pairs, batch_size, mirror_pairs=views == 2), (train_bank, pairs)
    if kind == "stanfordextra":
        fold = stanfordextra_fold(_root(data), data.get("held_out_breed"))
        train_bank = bank(fold.train_items)  # the held-out breed's images are not even in the bank
        train_bank.meta["held_out_breed"] = fold.held_out_breed
        return train_bank, FixedPairs(train_bank, fold.train_pairs, batch_size), (train_bank, fold.train_pairs)
    raise UnknownNameError(f"unknown SCorrSAN training dataset {kind!r}; use mtfl, pf-willow or stanfordextra")


# --- steps ----------------------------------------------------------------------------------------------------------


class _Queries:
    """Target query pixels of a batch: the K keypoints first, then the pseudo-label positions (if any)."""

    def __init__(self, batch: dict, bank_size: int, stride: float, model: ScorrsanConfig, ts: dict | None):
        self.keypoints = torch.nan_to_num(batch["target_points"])
        self.valid = batch["valid"]
        self.count = self.keypoints.shape[1]
        self.positions = None
        if ts is None:
            self.all = self.keypoints
            return
        factor = int(model.upsample)
        cells = int(round(bank_size / stride)) * factor
        cell = stride / factor
        if int(ts["dilation"] or 0) > 0:
            mask = dilate_mask(keypoint_mask(batch["target_points"], self.valid, cells, cell), int(ts["dilation"]))
        else:  # no spatial prior: the whole image
            mask = torch.ones(self.valid.shape[0], 1, cells, cells)
        limit = int(ts.get("max_positions") or 0)
        if limit and int(mask.flatten(1).sum(1).max()) > limit:
            mask = _subsample_mask(mask, limit)
        self.positions, self.position_valid = mask_positions(mask, cell)
        self.all = torch.cat([self.keypoints, self.positions], dim=1)


def _subsample_mask(mask: torch.Tensor, limit: int) -> torch.Tensor:
    """Keep ``limit`` random non-zero cells per pair (global torch RNG: restored on resume)."""
    flat = mask.flatten(1)
    scores = torch.rand(flat.shape) + (flat > 0).float() * 2.0  # masked cells first, random order among them
    keep = torch.topk(scores, limit, dim=1).indices
    out = torch.zeros_like(flat).scatter_(1, keep, 1.0) * (flat > 0).float()
    return out.reshape(mask.shape)


def _predict(head: ScorrsanHead, batch: dict, queries: torch.Tensor) -> torch.Tensor:
    return head(batch["target"], batch["source"], queries)  # target -> source flow at the queries


def _ratio(ts: dict, epoch: float) -> float:
    selection = ts.get("selection")
    if not selection:
        return 1.0
    return selection_ratio(epoch, float(selection.get("start", 0.5)), float(selection.get("end", 1.0)),
                           float(selection.get("ramp_epochs", 10)))


class BaselineStep:
    def __init__(self, bank_size: int, stride: float, model: ScorrsanConfig):
        self.bank_size, self.stride, self.model = bank_size, stride, model

    def __call__(self, head, batch):
        queries = _Queries(batch, self.bank_size, self.stride, self.model, None)
        predicted = _predict(head, batch, queries.all)
        sparse = sparse_flow_loss(predicted, batch["source_points"], batch["valid"])
        return {"loss": sparse, "sparse": sparse}


class StudentStep:
    """ST: the frozen ``teacher`` head (not part of the trained model) labels the dilated mask."""

    def __init__(self, bank_size: int, stride: float, model: ScorrsanConfig, ts: dict, teacher: ScorrsanHead):
        self.bank_size, self.stride, self.model, self.ts = bank_size, stride, model, ts
        self.teacher = teacher.eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)

    def __call__(self, head, batch):
        queries = _Queries(batch, self.bank_size, self.stride, self.model, self.ts)
        predicted = _predict(head, batch, queries.all)
        with torch.no_grad():
            labels = _predict(self.teacher, batch, queries.positions)
        count = queries.count
        sparse = sparse_flow_loss(predicted[:, :count], batch["source_points"], batch["valid"])
        ratio = _ratio(self.ts, batch["epoch"])
        pseudo, selected = pseudo_label_loss(predicted[:, count:], labels, queries.position_valid, ratio)
        loss = sparse + float(self.ts["weight"]) * pseudo
        return {"loss": loss, "sparse": sparse, "pseudo": pseudo, "ratio": ratio,
                "selected": selected.sum() / queries.position_valid.sum().clamp(min=1)}


class MutualStep:
    """MT: heads a and b, each the (detached) teacher of the other on the shared dilated mask."""

    def __init__(self, bank_size: int, stride: float, model: ScorrsanConfig, ts: dict):
        self.bank_size, self.stride, self.model, self.ts = bank_size, stride, model, ts

    def __call__(self, pair, batch):
        queries = _Queries(batch, self.bank_size, self.stride, self.model, self.ts)
        count = queries.count
        ratio = _ratio(self.ts, batch["epoch"])
        flows = [_predict(head, batch, queries.all) for head in pair.heads]
        out, total = {"ratio": ratio}, 0.0
        for name, own, other in (("a", flows[0], flows[1]), ("b", flows[1], flows[0])):
            sparse = sparse_flow_loss(own[:, :count], batch["source_points"], batch["valid"])
            pseudo, _ = pseudo_label_loss(own[:, count:], other[:, count:].detach(), queries.position_valid, ratio)
            loss = sparse + float(self.ts["weight"]) * pseudo
            out.update({f"sparse_{name}": sparse, f"pseudo_{name}": pseudo})
            total = total + loss
        out["loss"] = total
        return out


# --- the experiment -------------------------------------------------------------------------------------------------


@register_trainer("scorrsan")
def build_experiment(config: dict, device="cpu", progress: bool = True) -> Experiment:
    """``method: scorrsan`` -> Experiment (see the module docstring); ``progress`` shows the feature bar."""
    model = ScorrsanConfig.from_dict(config.get("model"))
    config["model"] = model.to_dict()
    ts = teacher_student_options(config.get("teacher_student"))
    config["teacher_student"] = ts
    data = dict(config.get("data") or {})
    train = dict(config.get("train") or {})
    bank, source, _ = training_data(data, model, device, config.get("weights_files"),
                                    progress and bool(train.get("progress", True)))
    config["model_info"] = {"in_channels": bank.channels, "stride": bank.stride, "input_size": bank.size}
    config.setdefault("data_info", bank.meta)
    torch.manual_seed(int(config.get("seed", 0)))  # the cache must not change the initial weights
    if ts["variant"] == "mt":
        module = MutualHeads(model, bank.channels, bank.stride)
        step = MutualStep(bank.size, bank.stride, model, ts)
    else:
        module = ScorrsanHead(model, bank.channels, bank.stride)
        if ts["variant"] == "st":
            teacher, teacher_config, _ = head_from_checkpoint(read_checkpoint(os.path.expandvars(str(ts["teacher"]))))
            if teacher_config.image_size != model.image_size or teacher_config.backbone != model.backbone:
                raise CorrmarkError("the ST teacher must use the student's descriptor and image size")
            step = StudentStep(bank.size, bank.stride, model, ts, teacher)
        else:
            step = BaselineStep(bank.size, bank.stride, model)
    steps = int(train.get("steps", 1000))
    lr, weight_decay = float(train.get("lr", 3e-4)), float(train.get("weight_decay", 0.01))
    return Experiment(
        model=module,
        optimizer_factory=lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay),
        step=step,
        data=source,
        max_steps=steps,
        scheduler_factory=cosine_schedule(steps, int(train.get("warmup", 0))),
        grad_clip=train.get("grad_clip"),
    )


# --- evaluation on banks and MT selection ---------------------------------------------------------------------------


@torch.no_grad()
def predict_pairs(head: ScorrsanHead, bank: FeatureBank, pairs, batch_size: int = 16) -> list[np.ndarray]:
    """t2s predictions for ``pairs`` ((source, target) image indices, view 0): for each pair the source-image
    (original pixels) positions of the target's keypoints, (K, 2), NaN where the target keypoint is missing."""
    head.eval()
    results = []
    for start in range(0, len(pairs), batch_size):
        chosen = pairs[start:start + batch_size]
        sources = bank.rows([s for s, _ in chosen])
        targets = bank.rows([t for _, t in chosen])
        queries = torch.nan_to_num(bank.points[targets])
        predicted = head(bank.features[targets].float(), bank.features[sources].float(), queries)
        for row, (source_index, _) in enumerate(chosen):
            shape = tuple(int(v) for v in bank.shapes[source_index])
            original = resize_points(predicted[row], (bank.size, bank.size), shape).numpy().astype(np.float64)
            original[~torch.isfinite(bank.points[targets[row]]).all(-1).numpy()] = np.nan
            results.append(original)
    return results


def original_points(bank: FeatureBank, image: int) -> np.ndarray:
    shape = tuple(int(v) for v in bank.shapes[image])
    return resize_points(bank.points[bank.rows([image])[0]].double(), (bank.size, bank.size), shape).numpy()


def evaluate_pairs(head: ScorrsanHead, bank: FeatureBank, pairs, alphas=(0.05, 0.1, 0.15), interocular=False,
                   categories=None) -> dict:
    """PCK (t2s, per pair) of ``head`` on bank pairs: ``kp-bbox`` and, for faces, the inter-ocular threshold."""
    predictions = predict_pairs(head, bank, pairs)
    kp_box = PCKAccumulator(PCKProtocol("t2s", "kp-bbox", "pair", alphas))
    eyes = InterOcularPCK("t2s", alphas) if interocular else None
    for index, ((source, target), predicted) in enumerate(zip(pairs, predictions)):
        gt = original_points(bank, source)
        valid = np.isfinite(gt).all(1) & np.isfinite(original_points(bank, target)).all(1)
        shape = tuple(int(v) for v in bank.shapes[source])
        category = categories[index] if categories is not None else None
        kp_box.add(predicted[valid], gt, valid, shape, category=category)
        if eyes is not None:
            eyes.add(predicted[valid], gt, valid)
    result = {"kp-bbox": kp_box.result()}
    if eyes is not None:
        result["inter-ocular"] = eyes.result()
    return result


def select_mutual_head(final_path, config_path_or_dict=None, device="cpu", progress=False):
    """Score both heads of an MT checkpoint on the validation pairs (kp-bbox PCK@0.1, t2s) and write
    ``selected.pt`` beside it, with ``metrics.selected_head`` and both validation scores. Returns its path."""
    payload = read_checkpoint(final_path)
    config = payload["config"]
    model = ScorrsanConfig.from_dict(config.get("model"))
    _, _, validation = training_data(dict(config.get("data") or {}), model, device, config.get("weights_files"),
                                     progress)
    if validation is None:
        raise CorrmarkError("MT head selection needs validation pairs (data.validation for mtfl)")
    bank, pairs = validation
    scores = []
    for index in (0, 1):
        head, _, _ = head_from_checkpoint(payload, index)
        scores.append(evaluate_pairs(head, bank, pairs)["kp-bbox"]["pck"]["0.1"])
    chosen = int(np.argmax(scores))
    payload["metrics"] = dict(payload.get("metrics") or {}, selected_head=chosen,
                              validation_pck_0_1=[float(s) for s in scores])
    path = Path(final_path).with_name("selected.pt")
    save_checkpoint(path, payload)
    return path
