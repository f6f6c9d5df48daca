"""Detection accuracy by the PASCAL VOC 2007 protocol: average precision per class at
IoU 0.5, 11-point interpolated (the VOC 2007 devkit's `VOCevaldet.m`), and the mean over
classes, mAP, the figure the paper's Sec. 4.5 reports (69.5 / 70.3 / 75.0).  The
area-under-curve AP of the later VOC devkits (2010 on) is computed beside it.

The rules, as the devkit applies them per class:

- detections of all test images are ranked by score, highest first;
- each is matched to the ground-truth box of its image (same class) that it overlaps most,
  difficult and already-matched boxes included;
- overlap >= 0.5 with a box marked difficult: ignored (neither true nor false positive);
- overlap >= 0.5 with a box not matched before: a true positive, the box is now matched;
  with one matched before (a duplicate), or overlap < 0.5: a false positive;
- recall is over the non-difficult boxes only.

Boxes are (x1, y1, x2, y2) in continuous pixel coordinates and IoU has no "+1": the devkit's
inclusive integer boxes [xmin, xmax] are the continuous [xmin - 1, xmax]
(`detection.data.parse_voc_objects`), on which the continuous IoU equals the devkit's.
A class without a non-difficult box has no AP (NaN) and is left out of the mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

IOU_THRESHOLD = 0.5


@dataclass
class GroundTruth:
    """One image's boxes: (N, 4) array, class labels (N,), difficult flags (N,)."""

    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray = field(default=None)

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.difficult = (np.zeros(len(self.labels), dtype=bool) if self.difficult is None
                          else np.asarray(self.difficult, dtype=bool).reshape(-1))


@dataclass
class Detections:
    """One image's detections: (M, 4) boxes, scores (M,), class labels (M,)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box with each of `boxes` (continuous coordinates)."""
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, np.finfo(np.float64).tiny)


def precision_recall(detections: list[Detections], truths: list[GroundTruth], label: int,
                     threshold: float = IOU_THRESHOLD) -> tuple[np.ndarray, np.ndarray, int]:
    """(precision, recall) after each ranked detection of class `label`, and the number of
    non-difficult boxes of that class (the module docstring's matching rules)."""
    gt_boxes = [t.boxes[t.labels == label] for t in truths]
    gt_difficult = [t.difficult[t.labels == label] for t in truths]
    matched = [np.zeros(len(b), dtype=bool) for b in gt_boxes]
    positives = int(sum((~d).sum() for d in gt_difficult))
    image, score, box = [], [], []
    for i, d in enumerate(detections):
        keep = d.labels == label
        image += [i] * int(keep.sum())
        score.append(d.scores[keep])
        box.append(d.boxes[keep])
    if not image:
        return np.zeros(0), np.zeros(0), positives
    score, box, image = np.concatenate(score), np.concatenate(box), np.asarray(image)
    order = np.argsort(-score, kind="stable")
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for rank, j in enumerate(order):
        candidates = gt_boxes[image[j]]
        if len(candidates) == 0:
            fp[rank] = 1
            continue
        overlaps = iou(box[j], candidates)
        best = int(np.argmax(overlaps))
        if overlaps[best] < threshold:
            fp[rank] = 1
        elif gt_difficult[image[j]][best]:
            continue  # a difficult object: neither true nor false positive
        elif matched[image[j]][best]:
            fp[rank] = 1  # a duplicate of a detection already counted
        else:
            tp[rank] = 1
            matched[image[j]][best] = True
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / max(positives, 1)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).tiny)
    return precision, recall, positives


def ap_11_point(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC 2007 AP: the mean over recall levels t = 0, 0.1, ..., 1 of the highest precision
    at recall >= t (0 where recall never reaches t)."""
    levels = np.linspace(0, 1, 11)
    return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in levels]))


def ap_area(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the precision-recall curve made monotone (the VOC 2010+ devkits' AP)."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def voc_ap(detections: list[Detections], truths: list[GroundTruth], labels: list[int],
           threshold: float = IOU_THRESHOLD) -> dict:
    """Per-class AP (11-point and area) for `labels` and their means over classes that have
    a non-difficult box: {"map", "map_area", "ap": {label: ap}, "ap_area": {...}}; all in
    [0, 1]."""
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} images of detections against {len(truths)} of ground truth")
    ap, area = {}, {}
    for label in labels:
        precision, recall, positives = precision_recall(detections, truths, label, threshold)
        if positives == 0:
            ap[label] = area[label] = math.nan
        elif len(precision) == 0:
            ap[label] = area[label] = 0.0
        else:
            ap[label], area[label] = ap_11_point(precision, recall), ap_area(precision, recall)
    counted = [label for label in labels if not math.isnan(ap[label])]
    mean = (lambda values: float(np.mean([values[k] for k in counted])) if counted else math.nan)
    return {"map": mean(ap), "map_area": mean(area), "ap": ap, "ap_area": area}
