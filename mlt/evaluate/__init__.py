"""Evaluation: image scores by the power-k mean over windows, VOC AP, localisation maps.

Pure numpy/Pillow (no Ray, no MLflow), so the method's numbers can be checked on their own.
"""

from mlt.evaluate.ap import (
    AP_FORMS,
    APForm,
    APTable,
    ap_table,
    area_ap,
    average_precision,
    voc07_ap,
)
from mlt.evaluate.groundtruth import class_boxes, image_labels
from mlt.evaluate.localise import (
    PointingResult,
    heat_colours,
    overlay_png,
    pointing_accuracy,
    pointing_chance,
    pointing_hit,
    score_map,
)
from mlt.evaluate.scores import PowerK, image_scores, k_name, power_mean

__all__ = [
    "AP_FORMS",
    "APForm",
    "APTable",
    "PointingResult",
    "PowerK",
    "ap_table",
    "area_ap",
    "average_precision",
    "class_boxes",
    "heat_colours",
    "image_labels",
    "image_scores",
    "k_name",
    "overlay_png",
    "pointing_accuracy",
    "pointing_chance",
    "pointing_hit",
    "power_mean",
    "score_map",
    "voc07_ap",
]
