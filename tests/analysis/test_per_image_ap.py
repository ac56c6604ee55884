"""Per-image AP equals COCOeval run on that image alone; a perfect image ranks first."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from codetr.analysis.per_image_ap import per_image_ap, rank_images
from codetr.evaluation.coco_format import gt_to_coco_dict, preds_to_coco_json
from codetr.evaluation.coco_metric import load_coco

CLASSES = ('a', 'b')


def _info(boxes, labels, ignore=None):
    ignore = ignore or [0] * len(labels)
    return dict(width=100, height=80, instances=[
        dict(bbox=list(map(float, b)), bbox_label=lab, ignore_flag=i)
        for b, lab, i in zip(boxes, labels, ignore)])


def _record(img_id, boxes, scores, labels):
    return dict(img_id=img_id, pred_instances=dict(
        bboxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        scores=np.asarray(scores, dtype=np.float64), labels=np.asarray(labels, np.int64)))


INFOS = {
    1: _info([[10, 10, 40, 40], [50, 20, 90, 70]], [0, 1]),
    2: _info([[10, 10, 40, 40], [60, 10, 90, 30], [0, 50, 20, 70]], [0, 0, 1], [0, 0, 1]),
    3: _info([[5, 5, 25, 25]], [1]),
    4: _info([], []),
}
RECORDS = [
    _record(1, [[10, 10, 40, 40], [50, 20, 90, 70]], [0.9, 0.8], [0, 1]),  # perfect
    # a shifted box (IoU 0.64), a false positive ranked above a hit, a box on the crowd one
    _record(2, [[12, 13, 42, 43], [0, 0, 5, 5], [60, 10, 90, 30], [0, 50, 20, 70]],
            [0.9, 0.85, 0.7, 0.95], [0, 0, 0, 1]),
    _record(3, [[30, 30, 60, 60]], [0.5], [1]),  # a miss
    _record(4, [[0, 0, 10, 10]], [0.4], [0]),  # no ground truth
]


def _coco_eval_on(img_id):
    gts = [dict(img_id=i, width=100, height=80, anns=INFOS[i]['instances']) for i in INFOS]
    coco_gt = load_coco('pycocotools', gt_to_coco_dict(gts, CLASSES))
    preds = [dict(img_id=r['img_id'], **r['pred_instances']) for r in RECORDS]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(preds_to_coco_json(preds, [0, 1])),
                             'bbox')
        coco_eval.params.imgIds = [img_id]
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats[0]


def test_per_image_ap_is_cocoeval_on_that_image():
    aps = per_image_ap(RECORDS, INFOS, CLASSES)
    assert aps[1] == pytest.approx(1.0)
    assert aps[3] == 0.0 and aps[4] is None
    for img_id in (1, 2, 3):
        assert aps[img_id] == pytest.approx(_coco_eval_on(img_id), abs=1e-12)
    assert 0 < aps[2] < 1


def test_ranking_puts_the_perfect_image_first_and_no_gt_last():
    aps = per_image_ap(RECORDS, INFOS, CLASSES)
    assert rank_images(aps) == [1, 2, 3, 4]


def test_no_detections_at_all():
    empty = [_record(i, [], [], []) for i in (1, 4)]
    assert per_image_ap(empty, INFOS, CLASSES) == {1: 0.0, 4: None}
