"""SCorrSAN (Huang et al., ECCV 2022): semantic correspondence learned from sparse keypoints.

Pipeline (paper Sec. 3), adapted to CPU (docs/SCORRSAN.md):

1. Both images are resized to a square ``image_size`` and described by a *frozen* backbone (default: the fused
   DINOv2-S block 8 + EfficientNet-Lite0 stages 3-4 descriptor of ``backbones.descriptors``, stride 14 -> a 16 x 16
   grid at 224 px). Only the head below is trained, so training runs on cached features.
2. Efficient spatial context encoder (SCE, Sec. 3.1): the sparse criss-cross + diagonal self-similarity of kernel size
   ``k`` (``ops.sparse_self_similarity``, ``4 (k - 1)`` channels) is concatenated with the features, then a linear
   layer (1x1 convolution) and a ReLU.
3. 4D cosine correlation of the two context-aware maps, soft mutual nearest neighbour filtering (Sec. 3.2).
4. The correlation is upsampled ``upsample`` times on both image sides (bilinear, ``align_corners=False``) and the
   kernel soft argmax turns it into a target-to-source flow (Sec. 3.3). Memory bound: the upsampled 4D volume is never
   built. Bilinear upsampling is separable, so the row of the upsampled volume at any target position equals the
   bilinear read of the coarse volume at that (sub-cell) position followed by upsampling of the source side; the
   model evaluates exactly those rows, only at the target positions that are asked for (keypoints and dilated-mask
   cells in training, the fine grid in chunks for a dense mapping). Peak memory is ``N_queries x (f h_s) x (f w_s)``.

Coordinates: queries and outputs are ``(x, y)`` pixels of the square network input (the cell-centre convention of
docs/CONVENTIONS.md); the Matcher converts to and from original image pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.descriptors import DescriptorExtractor, parse_backbone_spec
from ..cache import DescriptorCache
from ..checkpoints import check_state_keys, read_checkpoint
from ..device import resolve_device
from ..errors import CheckpointError, CorrmarkError, UnknownNameError
from ..io import ImageLike, check_keypoints, read_image
from ..ops import (correlation_4d, grid_to_pixel, kernel_soft_argmax, l2_normalize, mutual_nn_filter, pixel_to_grid,
                   sample_field, soft_argmax_4d, soft_argmax_around_peak, sparse_self_similarity)
from ..preprocess import Preprocess
from ..registry import register_matcher
from .base import CoarseMapping, Matcher, MethodConfig


@dataclass
class ScorrsanConfig(MethodConfig):
    label: ClassVar[str] = "SCorrSAN"  # error messages name the method
    backbone: str = "dinov2_vits14+efficientnet_lite0"  # frozen descriptor (backbones.descriptors.parse_backbone_spec)
    layers: list | None = None  # default [[8], [3, 4]] for the fused descriptor
    image_size: int = 224  # square input side (rounded to the descriptor's size multiple)
    sce: bool = True  # efficient spatial context encoder on/off (ablation)
    sce_kernel: int = 7  # self-similarity kernel size k (4 (k - 1) channels)
    sce_dilation: int = 1
    channels: int = 256  # output channels of the linear + ReLU fusion
    mutual: bool = True  # soft mutual nearest neighbour filtering of the correlation
    upsample: int = 4  # correlation upsampling factor (1 = flow on the backbone grid)
    beta: float = 50.0  # softmax temperature of the kernel soft argmax
    sigma: float = 2.0  # Gaussian window std in *coarse* cells (scaled by ``upsample`` on the fine grid)
    normalize_scores: bool = False  # L2-normalise each correlation row first (SFNet's kernel soft argmax does)
    argmax: str = "window"  # "kernel" (SFNet: softmax(beta * k * c)) | "window" (k * exp(beta * c)) | "soft"

    def __post_init__(self):
        if self.layers is None:
            self.layers = [[8], [3, 4]] if "+" in self.backbone else None
        if int(self.upsample) < 1:
            raise CorrmarkError(f"SCorrSAN upsample must be >= 1, got {self.upsample}")
        if self.argmax not in ("kernel", "window", "soft"):
            raise CorrmarkError(f"SCorrSAN argmax must be 'kernel', 'window' or 'soft', got {self.argmax!r}")
        if self.sce and (self.sce_kernel < 3 or self.sce_kernel % 2 == 0):
            raise CorrmarkError(f"SCorrSAN sce_kernel must be odd and >= 3, got {self.sce_kernel}")



class ScorrsanHead(nn.Module):
    """The trainable part: SCE + fusion; correlation, filtering, upsampling and the soft argmax are parameter-free.

    ``in_channels`` is the frozen descriptor's channel count; ``stride`` the descriptor grid's stride in input pixels.
    """

    def __init__(self, config: ScorrsanConfig, in_channels: int, stride: float):
        super().__init__()
        self.config = config
        self.stride = float(stride)
        context = 4 * (config.sce_kernel - 1) if config.sce else 0
        self.fuse = nn.Conv2d(in_channels + context, config.channels, kernel_size=1)

    def describe_features(self, features: torch.Tensor) -> torch.Tensor:
        """Frozen ``(B, C, h, w)`` -> context-aware ``(B, channels, h, w)`` (L2-normalised)."""
        if self.config.sce:
            context = sparse_self_similarity(features, self.config.sce_kernel, self.config.sce_dilation)
            features = torch.cat([features, context], dim=1)
        return l2_normalize(F.relu(self.fuse(features)))

    def correlate(self, query: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Context-aware maps -> coarse ``(B, h_q, w_q, h_r, w_r)`` correlation (mutual-filtered)."""
        correlation = correlation_4d(query, reference, normalize=False)  # inputs are unit vectors, >= 0 after ReLU
        if self.config.mutual:
            correlation = mutual_nn_filter(correlation.clamp(min=0))
        return correlation

    def match_rows(self, correlation: torch.Tensor, queries_px: torch.Tensor) -> torch.Tensor:
        """Reference pixels matching query pixels.

        Args:
            correlation: ``(B, h_q, w_q, h_r, w_r)`` from :meth:`correlate`.
            queries_px: ``(B, N, 2)`` ``(x, y)`` pixels of the query input (finite; padding rows may hold any finite
                value).

        Returns:
            ``(B, N, 2)`` ``(x, y)`` pixels of the reference input.
        """
        batch, h_q, w_q, h_r, w_r = correlation.shape
        field = correlation.reshape(batch, h_q, w_q, h_r * w_r).permute(0, 3, 1, 2)
        grid_points = pixel_to_grid(queries_px, self.stride)
        # bilinear read = the query-side upsampling of the volume, evaluated only where asked
        rows = sample_field(field, grid_points, channels_last=False).reshape(batch, -1, h_r, w_r)
        factor = int(self.config.upsample)
        if factor > 1:
            rows = F.interpolate(rows, scale_factor=factor, mode="bilinear", align_corners=False)
        volume = rows.unsqueeze(2)  # (B, N, 1, H_r, W_r): N "cells" of a 4D volume
        if self.config.argmax == "kernel":
            matched = kernel_soft_argmax(volume, beta=self.config.beta, sigma=self.config.sigma * factor,
                                         normalize=self.config.normalize_scores)
        elif self.config.argmax == "window":
            matched = soft_argmax_around_peak(rows, self.config.beta, self.config.sigma * factor,
                                              self.config.normalize_scores)[:, :, None]
        else:
            scores = volume
            if self.config.normalize_scores:
                scores = l2_normalize(volume.flatten(3), dim=3).reshape(volume.shape)
            matched = soft_argmax_4d(scores, beta=self.config.beta)
        return grid_to_pixel(matched[:, :, 0], self.stride / factor)

    def forward(self, query_features: torch.Tensor, reference_features: torch.Tensor,
                queries_px: torch.Tensor) -> torch.Tensor:
        """Frozen features of the query (target) and reference (source) images, ``(B, N, 2)`` query pixels ->
        ``(B, N, 2)`` matching reference pixels (the target-to-source flow read at the queries)."""
        correlation = self.correlate(self.describe_features(query_features), self.describe_features(reference_features))
        return self.match_rows(correlation, queries_px)


class MutualHeads(nn.Module):
    """Two heads of the same architecture trained together (mutual online teachers, MT)."""

    def __init__(self, config: ScorrsanConfig, in_channels: int, stride: float):
        super().__init__()
        self.heads = nn.ModuleList([ScorrsanHead(config, in_channels, stride) for _ in range(2)])


def fine_grid_pixels(size: int, stride: float, factor: int, device=None) -> torch.Tensor:
    """``(n * n, 2)`` pixel centres of the ``factor``-times upsampled grid of a square ``size`` input, row-major."""
    cells = int(round(size / stride)) * int(factor)
    step = stride / factor
    coords = (torch.arange(cells, dtype=torch.float32, device=device) + 0.5) * step - 0.5
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([xs, ys], dim=-1).reshape(-1, 2)


# --- checkpoint loading ---------------------------------------------------------------------------------------------


def head_from_checkpoint(payload: dict, head: int | None = None) -> tuple[ScorrsanHead, ScorrsanConfig, dict]:
    """The (single) trained head of a SCorrSAN checkpoint, loaded strictly.

    MT checkpoints hold two heads (``heads.0.*``, ``heads.1.*``): ``head`` picks one, default the one recorded as
    ``selected_head`` (by validation) in the checkpoint's metrics, else 0.
    """
    config = dict(payload.get("config") or {})
    if config.get("method") not in (None, "scorrsan"):
        raise CheckpointError(f"not a SCorrSAN checkpoint (method {config.get('method')!r})")
    model_config = ScorrsanConfig.from_dict(config.get("model"))
    info = dict(config.get("model_info") or {})
    if "in_channels" not in info or "stride" not in info:
        raise CheckpointError("SCorrSAN checkpoint lacks model_info (in_channels, stride); was it written by corrmark?")
    state = payload["model"]
    if any(key.startswith("heads.") for key in state):
        pair = MutualHeads(model_config, int(info["in_channels"]), float(info["stride"]))
        check_state_keys(pair, state, source="SCorrSAN MT checkpoint")
        pair.load_state_dict(state, strict=True)
        chosen = int(head if head is not None else (payload.get("metrics") or {}).get("selected_head", 0))
        if chosen not in (0, 1):
            raise CheckpointError(f"an MT checkpoint has heads 0 and 1, got head={chosen}")
        model = pair.heads[chosen]
    else:
        if head not in (None, 0):
            raise CheckpointError(f"this SCorrSAN checkpoint holds one head; head={head} does not exist")
        model = ScorrsanHead(model_config, int(info["in_channels"]), float(info["stride"]))
        check_state_keys(model, state, source="SCorrSAN checkpoint")
        model.load_state_dict(state, strict=True)
    return model.eval(), model_config, info


# --- the Matcher ----------------------------------------------------------------------------------------------------


class ScorrsanMatcher(Matcher):
    """A trained SCorrSAN head on its frozen descriptor, behind the ``Matcher`` interface.

    ``estimate_mapping(source, target)`` evaluates the target-to-source flow on the fine (upsampled) target grid and
    resizes it to the target image; ``transfer_keypoints(query, reference, points)`` evaluates the flow from the
    query image at exactly the given points (the high-resolution path, no grid rounding).
    """

    name = "scorrsan"

    def __init__(self, checkpoint, device="cpu", head: int | None = None, weights_files=None, chunk: int = 512,
                 precision: str | None = None):
        self.device = resolve_device(device)
        self.set_precision(precision, self.device)  # of the descriptor and its SCE (models.base.MixedPrecision)
        self.checkpoint = str(checkpoint)
        payload = read_checkpoint(checkpoint, map_location=self.device, method="scorrsan")
        try:
            self.head, self.config, self.info = head_from_checkpoint(payload, head)
        except CheckpointError as error:
            raise CheckpointError(f"checkpoint {checkpoint}: {error}") from None
        self.head.to(self.device)
        self.selected_head = head
        specs = parse_backbone_spec(self.config.backbone, self.config.layers)
        self.extractor = DescriptorExtractor(specs, device=self.device, weights_files=weights_files).eval()
        self.preprocess = Preprocess(self.config.image_size, self.extractor.size_multiple)
        self.size = self.preprocess.square_size
        if abs(self.extractor.stride - self.head.stride) > 1e-6:
            raise CheckpointError(f"checkpoint stride {self.head.stride} does not match the descriptor's "
                                  f"{self.extractor.stride}")
        self.chunk = int(chunk)
        self._cache = DescriptorCache(64)

    def describe(self) -> dict:
        return {"name": self.name, "checkpoint": self.checkpoint, "head": self.selected_head, **asdict(self.config),
                **self.precision_fields()}

    def coarse_mapping(self, source: np.ndarray, target: np.ndarray) -> CoarseMapping:
        """The target-to-source flow on the fine grid of the target's square input, in source image pixels."""
        queries = fine_grid_pixels(self.size, self.head.stride, self.config.upsample, self.device)
        matched = self._match(target, source, queries)  # (n*n, 2) source input pixels
        cells = int(round(len(queries) ** 0.5))
        grid = self.preprocess.to_original(matched, source.shape[:2]).reshape(cells, cells, 2)
        # the fine grid tiles the square input, so resizing it to (H_t, W_t) is the square resize undone
        return CoarseMapping(grid, extrapolate=True)

    def estimate_mapping(self, source: ImageLike, target: ImageLike) -> np.ndarray:
        source_image, target_image = read_image(source), read_image(target)
        return self.coarse_mapping(source_image, target_image).dense(target_image.shape[:2])

    def transfer_keypoints(self, source: ImageLike, target: ImageLike, points) -> np.ndarray:
        source_image, target_image = read_image(source), read_image(target)
        points = check_keypoints(points, source_image.shape[:2], name="source keypoints")
        if len(points) == 0:
            return np.zeros((0, 2))
        queries = self.preprocess.to_working(torch.as_tensor(points, dtype=torch.float32, device=self.device),
                                             source_image.shape[:2])
        matched = self._match(source_image, target_image, queries)
        return self.preprocess.to_original(matched, target_image.shape[:2]).cpu().numpy().astype(np.float64)

    @torch.no_grad()
    def _match(self, query_image: np.ndarray, reference_image: np.ndarray, queries_px: torch.Tensor) -> torch.Tensor:
        query, reference = self._describe(query_image), self._describe(reference_image)
        correlation = self.head.correlate(query, reference)
        parts = [self.head.match_rows(correlation, chunk[None])[0] for chunk in queries_px.split(self.chunk)]
        return torch.cat(parts)

    def _describe(self, image: np.ndarray) -> torch.Tensor:
        """Context-aware descriptors ``(1, channels, h, w)`` of an ``(H, W, 3)`` uint8 image, cached by content."""
        return self._cache.get_or_compute(image, lambda: self._describe_uncached(image), self.precision)

    @torch.no_grad()
    def _describe_uncached(self, image: np.ndarray) -> torch.Tensor:
        tensor = self.preprocess.to_input(image).to(self.device)  # resized on the CPU, as the feature banks were
        return self.at_precision(lambda: self.head.describe_features(self.extractor(tensor)), self.device)


@register_matcher("scorrsan", checkpoint_hint="final.pt or selected.pt")
def load_scorrsan(checkpoint, device="cpu", **options) -> ScorrsanMatcher:
    allowed = {"head", "weights_files", "chunk", "precision"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise UnknownNameError(f"unknown scorrsan matcher option(s) {', '.join(unknown)}; "
                               f"options: {', '.join(sorted(allowed))}")
    return ScorrsanMatcher(checkpoint, device=device, **options)
