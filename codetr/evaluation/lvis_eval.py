"""LVIS v1 federated box and mask evaluation, in numpy (mask IoU through pycocotools).

The ``lvis`` package (0.5.3) uses ``np.float`` and fails on numpy >= 1.24, so the official
semantics (lvis-api ``LVISEval``) are re-implemented here:

- an image is evaluated only on its ``pos`` categories (those with a GT box in it) and its
  ``neg_category_ids``; detections of any other category are dropped;
- a detection of a category in the image's ``not_exhaustive_category_ids`` that matches no
  GT box is ignored rather than counted as a false positive;
- at most ``max_dets`` detections per image, the top-scoring over all categories;
- COCO-style greedy matching per IoU threshold, 101-point interpolated precision, and
  averages over every (IoU, recall, category) cell that has GT (``-1`` marks none);
- ``iou_type='segm'`` matches by mask IoU (GT polygons / RLE against predicted RLEs) and
  takes a detection's area from its mask; GT areas are the annotations' ``area`` either way.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_util

from codetr.utils.progress import track

# LVIS / COCO evaluation constants (lvis-api Params): IoU .50:.05:.95, recall 0:.01:1.
IOU_THRS = np.linspace(0.5, 0.95, 10)
REC_THRS = np.linspace(0.0, 1.0, 101)
# Area ranges in pixels^2: all, small < 32^2, medium 32^2..96^2, large > 96^2.
AREA_RANGES = {'all': (0.0, 1e10), 's': (0.0, 32.0**2), 'm': (32.0**2, 96.0**2),
               'l': (96.0**2, 1e10)}
FREQ_GROUPS = ('r', 'c', 'f')  # rare (1-10 training images), common (11-100), frequent


def box_iou_xywh(dets: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """IoU ``(D, G)`` between ``(D, 4)`` and ``(G, 4)`` xywh boxes (no +1 pixel)."""
    d1, d2 = dets[:, None, :2], dets[:, None, :2] + dets[:, None, 2:]
    g1, g2 = gts[None, :, :2], gts[None, :, :2] + gts[None, :, 2:]
    wh = np.clip(np.minimum(d2, g2) - np.maximum(d1, g1), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = (dets[:, 2] * dets[:, 3])[:, None] + (gts[:, 2] * gts[:, 3])[None] - inter
    return inter / np.maximum(union, np.finfo(np.float64).eps)


def greedy_match(ious: np.ndarray, gt_ignore: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCO greedy matching of score-sorted detections to ignore-sorted GT.

    Args:
        ious: ``(D, G)``; detections by descending score, GT with non-ignored ones first.
        gt_ignore: ``(G,)`` bool.
    Returns:
        ``matched (T, D)`` bool and ``matched_ignored (T, D)`` bool (matched to an
        ignored GT), over the ``T`` IoU thresholds.
    """
    num_dt, num_gt = ious.shape
    matched = np.zeros((len(IOU_THRS), num_dt), dtype=bool)
    matched_ignored = np.zeros_like(matched)
    if num_gt == 0:  # detections of a negative category: nothing to match
        return matched, matched_ignored
    for t, thr in enumerate(IOU_THRS):
        gt_taken = np.zeros(num_gt, dtype=bool)
        for d in range(num_dt):
            best, best_iou = -1, min(thr, 1 - 1e-10)
            for g in range(num_gt):
                if gt_taken[g]:
                    continue
                # Once a real GT is matched, ignored ones (sorted last) cannot replace it.
                if best > -1 and not gt_ignore[best] and gt_ignore[g]:
                    break
                if ious[d, g] < best_iou:
                    continue
                best, best_iou = g, ious[d, g]
            if best > -1:
                gt_taken[best] = True
                matched[t, d] = True
                matched_ignored[t, d] = gt_ignore[best]
    return matched, matched_ignored


def interpolated_precision(tp: np.ndarray, fp: np.ndarray, num_gt: int
                           ) -> tuple[np.ndarray, float]:
    """101-point precision ``(R,)`` and final recall from score-ordered ``tp``/``fp`` flags."""
    tp_sum, fp_sum = np.cumsum(tp), np.cumsum(fp)
    if tp_sum.size == 0:
        return np.zeros(len(REC_THRS)), 0.0
    recall = tp_sum / num_gt
    precision = tp_sum / (tp_sum + fp_sum + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at >= recall
    idx = np.searchsorted(recall, REC_THRS, side='left')
    out = np.zeros(len(REC_THRS))
    valid = idx < len(precision)
    out[valid] = precision[idx[valid]]
    return out, float(recall[-1])


def _stack(groups: dict[tuple, list]) -> dict[tuple, np.ndarray]:
    """Lists of ``(x, y, w, h, area_or_score)`` tuples -> ``(N, 5)`` float arrays."""
    return {key: np.asarray(rows, dtype=np.float64).reshape(-1, 5) for key, rows in groups.items()}


def gt_rle(segm: list | dict, height: int, width: int) -> dict:
    """A GT segmentation (polygons or RLE, compressed or not) as one compressed RLE."""
    if isinstance(segm, list):
        return mask_util.merge(mask_util.frPyObjects(segm, height, width))
    if isinstance(segm.get('counts'), list):
        return mask_util.frPyObjects(segm, height, width)
    return segm


class LVISFederatedEval:
    """Federated LVIS evaluation of COCO-format results against an LVIS v1 GT dict.

    Args:
        gt: LVIS json dict (``images`` with ``neg_category_ids`` and
            ``not_exhaustive_category_ids``; ``annotations`` with xywh ``bbox``;
            ``categories`` with ``frequency`` in r/c/f).
        results: ``[{image_id, category_id, bbox xywh, score}]``.
        img_ids: images to evaluate; default all GT images.
        max_dets: detections kept per image (top scores over all categories).
        iou_type: ``'bbox'`` or ``'segm'`` (results then carry ``segmentation`` RLEs and the
            GT annotations ``segmentation`` polygons or RLE).
    """

    def __init__(self, gt: dict, results: Sequence[dict], img_ids: Sequence[int] | None = None,
                 max_dets: int = 300, iou_type: str = 'bbox') -> None:
        if iou_type not in ('bbox', 'segm'):
            raise ValueError(f"iou_type={iou_type!r} must be 'bbox' or 'segm'.")
        self.iou_type = iou_type
        self._segms: dict[tuple, tuple[list, list]] = {}  # (img, cat) -> (gt RLEs, dt RLEs)
        self._mask_ious: dict[tuple, np.ndarray] = {}
        self._sizes = {img['id']: (img['height'], img['width']) for img in gt['images']
                       if 'height' in img and 'width' in img}
        self.cat_ids = sorted(c['id'] for c in gt['categories'])
        self.img_ids = sorted(set(img_ids) if img_ids is not None
                              else (img['id'] for img in gt['images']))
        self.max_dets = max_dets
        self.freq_groups = self._freq_groups(gt['categories'])
        self._gts, self._dts = self._group(gt, results)
        self.precision: np.ndarray | None = None  # (T, R, K, A)
        self.recall: np.ndarray | None = None  # (T, K, A)

    def _freq_groups(self, categories: Sequence[dict]) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {g: [] for g in FREQ_GROUPS}
        index = {cat: k for k, cat in enumerate(self.cat_ids)}
        for cat in categories:
            if cat.get('frequency') not in groups:
                raise ValueError(f'LVIS category {cat["id"]} ({cat.get("name")}) has frequency '
                                 f'{cat.get("frequency")!r}; expected one of {FREQ_GROUPS}. '
                                 f'Use the LVIS v1 annotation file.')
            groups[cat['frequency']].append(index[cat['id']])
        return groups

    def _group(self, gt: dict, results: Sequence[dict]) -> tuple[dict, dict]:
        """GT and kept detections per ``(img_id, cat_id)``, as arrays."""
        evaluated = set(self.img_ids)
        images = {img['id']: img for img in gt['images']}
        unknown = {r['image_id'] for r in results} - set(images)
        if unknown:
            raise ValueError(f'Results hold image ids {sorted(unknown)[:10]} that are not in the '
                             f'LVIS annotation file; evaluate against the matching split.')
        gts: dict[tuple, list] = defaultdict(list)
        segms: dict[tuple, tuple[list, list]] = defaultdict(lambda: ([], []))
        pos = defaultdict(set)
        for ann in gt['annotations']:
            if ann['image_id'] in evaluated:
                w, h = ann['bbox'][2:]
                key = ann['image_id'], ann['category_id']
                gts[key].append((*ann['bbox'], ann.get('area', w * h)))
                if self.iou_type == 'segm':
                    segms[key][0].append(self._gt_segm(ann))
                pos[ann['image_id']].add(ann['category_id'])
        per_image = defaultdict(list)
        for res in results:
            if res['image_id'] in evaluated:
                per_image[res['image_id']].append(res)
        dts: dict[tuple, list] = defaultdict(list)
        for img_id, dets in per_image.items():
            allowed = pos[img_id] | set(images[img_id].get('neg_category_ids', ()))
            dets = sorted(dets, key=lambda r: -r['score'])[:self.max_dets]
            for r in dets:
                if r['category_id'] in allowed:  # federated: other categories are unknown
                    dts[img_id, r['category_id']].append((*r['bbox'], r['score']))
                    if self.iou_type == 'segm':
                        segms[img_id, r['category_id']][1].append(r['segmentation'])
        self._not_exhaustive = {img_id: set(images[img_id].get('not_exhaustive_category_ids', ()))
                                for img_id in self.img_ids}
        self._segms = dict(segms)
        return _stack(gts), _stack(dts)

    def _gt_segm(self, ann: dict) -> dict:
        if not ann.get('segmentation'):
            raise ValueError(f'LVIS "segm" evaluation needs a segmentation for every annotation; '
                             f'annotation {ann.get("id")} has none.')
        height, width = self._sizes[ann['image_id']]
        return gt_rle(ann['segmentation'], height, width)

    def _ious(self, img_id: int, cat_id: int, dt_order: np.ndarray, gt_order: np.ndarray,
              dt: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """``(D, G)`` IoUs of the sorted detections and GT: boxes, or masks for 'segm'."""
        if self.iou_type == 'bbox' or len(dt) == 0 or len(gt) == 0:
            return box_iou_xywh(dt[:, :4], gt[:, :4])
        key = img_id, cat_id
        if key not in self._mask_ious:  # the same for every area range: computed once
            gt_rles, dt_rles = self._segms[key]
            ious = mask_util.iou(dt_rles, gt_rles, [0] * len(gt_rles))
            self._mask_ious[key] = np.asarray(ious, np.float64).reshape(len(dt_rles),
                                                                        len(gt_rles))
        return self._mask_ious[key][dt_order][:, gt_order]

    def _dt_areas(self, img_id: int, cat_id: int, dt_order: np.ndarray,
                  dt: np.ndarray) -> np.ndarray:
        """Area of each sorted detection: its box's, or its mask's for 'segm'."""
        if self.iou_type == 'bbox' or len(dt) == 0:
            return dt[:, 2] * dt[:, 3]
        rles = self._segms[img_id, cat_id][1]
        return np.asarray(mask_util.area(rles), np.float64)[dt_order]

    def _evaluate_img(self, img_id: int, cat_id: int, area: tuple[float, float]
                      ) -> dict | None:
        """Matching of one image's detections of one category within one area range."""
        gt = self._gts.get((img_id, cat_id), np.zeros((0, 5)))
        dt = self._dts.get((img_id, cat_id), np.zeros((0, 5)))
        if len(gt) == 0 and len(dt) == 0:
            return None
        gt_ignore = (gt[:, 4] < area[0]) | (gt[:, 4] > area[1])
        gt_order = np.argsort(gt_ignore, kind='mergesort')
        gt = gt[gt_order]
        gt_ignore = gt_ignore[gt_order]
        dt_order = np.argsort(-dt[:, 4], kind='mergesort')
        dt = dt[dt_order]
        ious = self._ious(img_id, cat_id, dt_order, gt_order, dt, gt)
        matched, dt_ignore = greedy_match(ious, gt_ignore)
        dt_area = self._dt_areas(img_id, cat_id, dt_order, dt)
        unmatched_ignored = ((dt_area < area[0]) | (dt_area > area[1]) |
                             (cat_id in self._not_exhaustive[img_id]))
        dt_ignore |= ~matched & unmatched_ignored[None]
        return dict(scores=dt[:, 4], matched=matched, ignore=dt_ignore,
                    num_gt=int((~gt_ignore).sum()))

    def evaluate(self, show_progress: bool = False) -> None:
        """Fill ``precision (T, R, K, A)`` and ``recall (T, K, A)``; -1 where no GT.

        ``show_progress`` reports the categories done (see :mod:`codetr.utils.progress`).
        """
        num_t, num_r, num_k = len(IOU_THRS), len(REC_THRS), len(self.cat_ids)
        self.precision = -np.ones((num_t, num_r, num_k, len(AREA_RANGES)))
        self.recall = -np.ones((num_t, num_k, len(AREA_RANGES)))
        img_ids_by_cat = defaultdict(set)
        for img_id, cat_id in list(self._gts) + list(self._dts):
            img_ids_by_cat[cat_id].add(img_id)
        categories = track(self.cat_ids, 'LVIS evaluate', unit='categories',
                           enabled=None if show_progress else False)
        for k, cat_id in enumerate(categories):
            for a, area in enumerate(AREA_RANGES.values()):
                evals = [e for img_id in sorted(img_ids_by_cat[cat_id])
                         if (e := self._evaluate_img(img_id, cat_id, area)) is not None]
                num_gt = sum(e['num_gt'] for e in evals)
                if num_gt == 0:
                    continue
                order = np.argsort(-np.concatenate([e['scores'] for e in evals]),
                                   kind='mergesort')
                matched = np.concatenate([e['matched'] for e in evals], axis=1)[:, order]
                ignore = np.concatenate([e['ignore'] for e in evals], axis=1)[:, order]
                for t in range(num_t):
                    tp, fp = matched[t] & ~ignore[t], ~matched[t] & ~ignore[t]
                    self.precision[t, :, k, a], self.recall[t, k, a] = interpolated_precision(
                        tp, fp, num_gt)

    def summarize(self) -> dict[str, float]:
        """AP, AP50, AP75, APs/m/l, APr/c/f and AR@max_dets (+ s/m/l); -1 where undefined."""
        if self.precision is None:
            self.evaluate()
        areas = list(AREA_RANGES)
        stats = {'AP': self._mean(self.precision[..., 0]),
                 'AP50': self._mean(self.precision[np.isclose(IOU_THRS, 0.5)][..., 0]),
                 'AP75': self._mean(self.precision[np.isclose(IOU_THRS, 0.75)][..., 0])}
        for size in 'sml':
            stats[f'AP{size}'] = self._mean(self.precision[..., areas.index(size)])
        for group, cats in self.freq_groups.items():
            stats[f'AP{group}'] = self._mean(self.precision[:, :, cats, 0])
        stats[f'AR@{self.max_dets}'] = self._mean(self.recall[..., 0])
        for size in 'sml':
            stats[f'AR{size}@{self.max_dets}'] = self._mean(self.recall[..., areas.index(size)])
        return stats

    @staticmethod
    def _mean(values: np.ndarray) -> float:
        valid = values[values > -1]
        return float(valid.mean()) if valid.size else -1.0
