"""The VOC 2007 mAP (detection/metric.py) on examples computed by hand."""

import math

import numpy as np
import pytest

from detection.metric import Detections, GroundTruth, ap_11_point, ap_area, iou, voc_ap

A = [10, 10, 50, 50]
B = [60, 60, 100, 100]
C = [0, 60, 40, 100]


def one_class(dets, truths, label=1):
    return voc_ap(dets, truths, [label])


def test_iou_by_hand():
    # overlap 20x40 = 800, union 1600 + 1600 - 800 = 2400
    assert iou(np.array(A, float), np.array([[30, 10, 70, 50]], float))[0] == pytest.approx(800 / 2400)
    assert iou(np.array(A, float), np.array([B], float))[0] == 0


def test_perfect_detections_give_ap_one():
    truths = [GroundTruth([A, B], [1, 1]), GroundTruth([C], [1])]
    dets = [Detections([B, A], [0.9, 0.8], [1, 1]), Detections([C], [0.7], [1])]
    result = one_class(dets, truths)
    assert result["map"] == 1.0 and result["map_area"] == 1.0


def test_a_missed_object():
    # two boxes, one found: recall 0.5 at precision 1.  11-point: t = 0..0.5 (6 levels) give 1,
    # t = 0.6..1 give 0 -> 6/11; area: 0.5 * 1.
    truths = [GroundTruth([A, B], [1, 1])]
    result = one_class([Detections([A], [0.9], [1])], truths)
    assert result["map"] == pytest.approx(6 / 11)
    assert result["map_area"] == pytest.approx(0.5)


def test_duplicates_are_false_positives():
    # A (0.9, TP), A again (0.8, duplicate: FP), B (0.7, TP): precision 1, 1/2, 2/3 at recall
    # 1/2, 1/2, 1.  11-point: 6 levels at 1, 5 levels at 2/3 -> (6 + 10/3) / 11; area 0.5 + 0.5 * 2/3.
    truths = [GroundTruth([A, B], [1, 1])]
    dets = [Detections([A, [11, 11, 50, 50], B], [0.9, 0.8, 0.7], [1, 1, 1])]
    result = one_class(dets, truths)
    assert result["map"] == pytest.approx((6 + 10 / 3) / 11)
    assert result["map_area"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    # The duplicate ranked below the second true positive costs nothing.
    dets = [Detections([A, [11, 11, 50, 50], B], [0.9, 0.6, 0.7], [1, 1, 1])]
    assert one_class(dets, truths)["map"] == 1.0


def test_difficult_objects_are_neither_found_nor_missed():
    # A difficult box, detected first, is ignored; not detected, it is not a miss.
    truths = [GroundTruth([A, B], [1, 1], difficult=[False, True])]
    assert one_class([Detections([B, A], [0.95, 0.9], [1, 1])], truths)["map"] == 1.0
    assert one_class([Detections([A], [0.9], [1])], truths)["map"] == 1.0
    # Counted as an ordinary object, the same detections of A alone find half.
    plain = [GroundTruth([A, B], [1, 1])]
    assert one_class([Detections([A], [0.9], [1])], plain)["map"] == pytest.approx(6 / 11)


def test_overlap_below_half_is_a_false_positive():
    # [30,10,70,50] overlaps A by 1/3: a false positive ranked first, then A: precision 0, 1/2.
    truths = [GroundTruth([A], [1])]
    dets = [Detections([[30, 10, 70, 50], A], [0.9, 0.8], [1, 1])]
    result = one_class(dets, truths)
    assert result["map"] == pytest.approx(0.5)
    assert result["map_area"] == pytest.approx(0.5)
    # Exactly 0.5 counts (the devkit's ovmax >= minoverlap): [10,10,50,90] contains A, twice its area.
    half = [10, 10, 50, 90]
    assert iou(np.array(A, float), np.array([half], float))[0] == pytest.approx(0.5)
    assert one_class([Detections([half], [0.9], [1])], truths)["map"] == 1.0


def test_classes_other_images_and_the_mean():
    # Class 1 perfect; class 2: its box missed and a detection on an image without class-2
    # boxes -> AP 0; class 3 has no box: NaN, left out of the mean.
    truths = [GroundTruth([A], [1]), GroundTruth([B], [2])]
    dets = [Detections([A, A], [0.9, 0.5], [1, 2]), Detections([], [], [])]
    result = voc_ap(dets, truths, [1, 2, 3])
    assert result["ap"][1] == 1.0 and result["ap"][2] == 0.0 and math.isnan(result["ap"][3])
    assert result["map"] == 0.5 and result["map_area"] == 0.5


def test_11_point_and_area_differ_as_defined():
    precision, recall = np.array([1.0, 0.5]), np.array([0.25, 0.5])
    # 11-point: t = 0, 0.1, 0.2 -> 1; t = 0.3, 0.4, 0.5 -> 0.5; rest 0 -> 4.5 / 11
    assert ap_11_point(precision, recall) == pytest.approx(4.5 / 11)
    assert ap_area(precision, recall) == pytest.approx(0.25 * 1 + 0.25 * 0.5)
