"""Evaluation metrics with explicit protocols: PCK for keypoint transfer, LT-ACC and IoU for mask transfer."""

from ..viz.landmarks import landmark_figure
from .landmark_detection import detect_landmarks, export_landmarks
from .landmark_images import ImageRecords, coco_landmark_images, images_at, pfwillow_landmark_images
from .landmarks import (equivariance_images, evaluate_landmark_points, evaluate_landmarks, fit_landmark_regressor,
                        landmark_equivariance)
from .masks import MaskAccumulator, label_transfer_accuracy, mask_iou
from .pck import (
    DEFAULT_ALPHAS,
    PCKAccumulator,
    PCKProtocol,
    alpha_key,
    evaluation_side,
    pck_per_pair,
    rescale_for_protocol,
    threshold_length,
)
from .records import RESULT_SCHEMA_VERSION, record_result
from .runner import evaluate_matcher, format_pck_table

__all__ = [
    "DEFAULT_ALPHAS",
    "ImageRecords",
    "MaskAccumulator",
    "PCKAccumulator",
    "PCKProtocol",
    "RESULT_SCHEMA_VERSION",
    "alpha_key",
    "coco_landmark_images",
    "detect_landmarks",
    "equivariance_images",
    "evaluate_landmark_points",
    "evaluate_landmarks",
    "export_landmarks",
    "fit_landmark_regressor",
    "images_at",
    "landmark_equivariance",
    "landmark_figure",
    "evaluate_matcher",
    "evaluation_side",
    "format_pck_table",
    "label_transfer_accuracy",
    "mask_iou",
    "pck_per_pair",
    "pfwillow_landmark_images",
    "record_result",
    "rescale_for_protocol",
    "threshold_length",
]
