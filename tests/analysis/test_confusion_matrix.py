"""Confusion matrix: MMDetection's counting rules on hand-made detections."""
from __future__ import annotations

import csv
import json

import numpy as np

from codetr.analysis.confusion_matrix import (
    accumulate_image,
    confusion_matrix,
    row_normalised,
    save_confusion_matrix,
)


def _gt(boxes, labels, ignore=None):
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ignore = np.zeros(len(boxes), bool) if ignore is None else np.asarray(ignore, bool)
    return boxes, np.asarray(labels, dtype=np.int64), ignore


def _pred(boxes, scores, labels):
    return dict(bboxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                scores=np.asarray(scores, dtype=np.float64),
                labels=np.asarray(labels, dtype=np.int64))


def _info(boxes, labels, ignore=()):
    ignore = list(ignore) or [0] * len(labels)
    return dict(instances=[dict(bbox=b, bbox_label=lab, ignore_flag=i)
                           for b, lab, i in zip(boxes, labels, ignore)])


def test_known_matrix_of_two_images():
    # Image 1: a class-0 box found (TP); a class-1 box called class 0 (confusion, and the
    # class-1 box is missed); a class-1 detection on nothing (background FP); a low-score
    # detection below the threshold (ignored).
    info1 = _info([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1])
    pred1 = _pred([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60], [0, 0, 10, 10]],
                  [0.9, 0.8, 0.7, 0.1], [0, 0, 1, 1])
    # Image 2: a class-1 box without any detection (missed).
    info2 = _info([[0, 0, 10, 10]], [1])
    records = [dict(img_id=1, pred_instances=pred1),
               dict(img_id=2, pred_instances=_pred([], [], []))]
    matrix = confusion_matrix(records, {1: info1, 2: info2}, num_classes=2, score_thr=0.3,
                              progress=False)
    assert matrix.tolist() == [[1, 0, 0],   # gt class 0: found
                               [1, 0, 2],   # gt class 1: called 0 once, missed twice
                               [0, 1, 0]]   # background: one class-1 false positive


def test_iou_threshold_and_one_detection_matching_two_boxes():
    # Two class-0 boxes side by side; one wide detection overlaps both at IoU 0.5.
    gt = _gt([[0, 0, 10, 10], [10, 0, 20, 10]], [0, 0])
    matrix = np.zeros((2, 2), np.int64)
    accumulate_image(matrix, gt, _pred([[0, 0, 20, 10]], [0.9], [0]), tp_iou_thr=0.5)
    assert matrix.tolist() == [[2, 0], [0, 0]]  # as MMDetection: both boxes count as found
    matrix[:] = 0
    accumulate_image(matrix, gt, _pred([[0, 0, 20, 10]], [0.9], [0]), tp_iou_thr=0.51)
    assert matrix.tolist() == [[0, 2], [1, 0]]  # no match: 2 missed, 1 background FP


def test_nms_and_ignored_boxes():
    gt = _gt([[0, 0, 10, 10], [40, 40, 60, 60]], [0, 1], ignore=[0, 1])
    # Two duplicates of the class-0 box, and a detection on the ignored (crowd) box.
    pred = _pred([[0, 0, 10, 10], [0, 0, 10, 9], [40, 40, 60, 60]], [0.9, 0.8, 0.9], [0, 0, 0])
    plain = np.zeros((3, 3), np.int64)
    accumulate_image(plain, gt, pred)
    assert plain.tolist() == [[2, 0, 0], [0, 0, 0], [0, 0, 0]]  # crowd: neither FN nor FP
    nms = np.zeros((3, 3), np.int64)
    accumulate_image(nms, gt, pred, nms_iou_thr=0.5)
    assert nms.tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_outputs_png_json_csv(tmp_path):
    matrix = np.array([[3, 1, 0], [0, 0, 2], [1, 0, 0]])
    paths = save_confusion_matrix(matrix, ('a', 'b'), str(tmp_path), dict(score_thr=0.3))
    data = json.loads(open(paths['json']).read())
    assert data['counts'] == matrix.tolist() and data['classes'] == ['a', 'b', 'background']
    assert data['row_percent'][0] == [75.0, 25.0, 0.0] and data['score_thr'] == 0.3
    rows = list(csv.reader(open(paths['csv'])))
    assert rows[0][1:] == ['a', 'b', 'background'] and rows[2] == ['b', '0', '0', '2']
    assert open(paths['png'], 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    assert row_normalised(np.zeros((2, 2))).tolist() == [[0, 0], [0, 0]]
