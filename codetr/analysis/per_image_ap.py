"""Per-image COCO AP: what COCOeval's AP@[.50:.95] would be on each image alone.

One ``COCOeval.evaluate()`` matches the detections of every (image, category) at the 10 IoU
thresholds; the accumulation is then done per image here, with COCOeval's rules: detections
sorted by score, the precision envelope read at the 101 recall points, categories without a
(non-crowd) ground-truth box on the image left out, the mean taken over IoU thresholds and
the remaining categories. An image without ground truth has no AP (``None``).
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np

from codetr.evaluation.coco_format import gt_to_coco_dict, preds_to_coco_json
from codetr.evaluation.coco_metric import coco_api, load_coco


def _category_ap(entry: dict, rec_thrs: np.ndarray) -> float | None:
    """COCO AP of one evalImgs entry (one image, one category) averaged over IoU thresholds."""
    num_gt = int(np.count_nonzero(np.asarray(entry['gtIgnore']) == 0))
    if num_gt == 0:
        return None
    order = np.argsort(-np.asarray(entry['dtScores']), kind='mergesort')
    matches = np.asarray(entry['dtMatches'])[:, order]  # (T, D) matched gt id or 0
    ignore = np.asarray(entry['dtIgnore'])[:, order].astype(bool)
    tps = np.cumsum((matches != 0) & ~ignore, axis=1, dtype=np.float64)
    fps = np.cumsum((matches == 0) & ~ignore, axis=1, dtype=np.float64)
    aps = []
    for tp, fp in zip(tps, fps):
        recall = tp / num_gt
        precision = tp / (tp + fp + np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]  # the envelope
        at = np.searchsorted(recall, rec_thrs, side='left')
        sampled = np.where(at < len(precision), precision[np.minimum(at, len(precision) - 1)]
                           if len(precision) else 0.0, 0.0)
        aps.append(float(np.mean(sampled)))
    return float(np.mean(aps))


def per_image_ap(records: Sequence[dict], infos: dict, classes: Sequence[str],
                 backend: str = 'pycocotools') -> dict:
    """``{img_id: AP or None}`` for every record (``load_det_results``), with the ground
    truth of ``infos`` (``{img_id: data_info}``); label ``i`` is ``classes[i]``."""
    gts = [dict(img_id=r['img_id'], width=infos[r['img_id']]['width'],
                height=infos[r['img_id']]['height'], anns=infos[r['img_id']]['instances'])
           for r in records]
    coco_gt = load_coco(backend, gt_to_coco_dict(gts, classes))
    preds = [dict(img_id=r['img_id'], **r['pred_instances']) for r in records]
    json_results = preds_to_coco_json(preds, list(range(len(classes))))
    img_ids = [r['img_id'] for r in records]
    result: dict = dict.fromkeys(img_ids)
    if not json_results:  # no detection at all: AP 0 wherever there is ground truth
        return {i: (0.0 if any(not a.get('ignore_flag') for a in infos[i]['instances'])
                    else None) for i in img_ids}
    _, eval_cls = coco_api(backend)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = eval_cls(coco_gt, coco_gt.loadRes(json_results), 'bbox')
        coco_eval.params.imgIds = img_ids
        coco_eval.evaluate()
    params = coco_eval.params
    num_areas, num_imgs = len(params.areaRng), len(params.imgIds)
    position = {img_id: n for n, img_id in enumerate(params.imgIds)}
    for img_id in img_ids:
        aps = []
        for k in range(len(params.catIds)):
            entry = coco_eval.evalImgs[k * num_areas * num_imgs + position[img_id]]  # area 'all'
            ap = None if entry is None else _category_ap(entry, params.recThrs)
            if ap is not None:
                aps.append(ap)
        result[img_id] = float(np.mean(aps)) if aps else None
    return result


def rank_images(aps: dict) -> list:
    """Image ids with an AP, best first (ties by id); images without ground truth last."""
    scored = sorted((i for i, ap in aps.items() if ap is not None),
                    key=lambda i: (-aps[i], str(i)))
    return scored + sorted((i for i, ap in aps.items() if ap is None), key=str)
