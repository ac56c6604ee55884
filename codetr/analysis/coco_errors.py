"""The COCO detection error breakdown (Hoiem-style PR curves): C75, C50, Loc, Sim, Oth, BG, FN.

Each curve is COCOeval's precision (101 recall points, up to 100 detections per image) under
a more forgiving setting than the one before it, so the area between two curves is what
one kind of error costs:

- ``C75`` / ``C50``: the plain PR curve at IoU 0.75 / 0.5;
- ``Loc``: at IoU 0.1 (localisation errors forgiven);
- ``Sim``: also forgiving confusion with a class of the same supercategory: per class, the
  ground truth of the other classes of its supercategory becomes crowd ("ignore") boxes of
  this class, so detections on them count as neither right nor wrong;
- ``Oth``: the same with the ground truth of every other class (class confusion forgiven);
- ``BG``: precision 1 wherever ``Oth`` reaches the recall (background false positives
  forgiven);
- ``FN``: precision 1 at every recall (missed objects forgiven).

Per class and area range (all / small / medium / large) the curves are averaged over the
recall points; the overall curves average the classes that have ground truth in the area
range (COCOeval's -1 "no ground truth" entries are left out, so the overall C75 / C50 are
COCOeval's AP75 / AP50).
"""
from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence

import numpy as np
from mmengine.utils import track_iter_progress

from codetr.evaluation.coco_metric import load_coco

ERROR_TYPES = ('C75', 'C50', 'Loc', 'Sim', 'Oth', 'BG', 'FN')
AREA_NAMES = ('all', 'small', 'medium', 'large')
DEFAULT_AREAS = (32 ** 2, 96 ** 2, 1e5 ** 2)  # COCO's small / medium / large limits
MAX_DETS = 100


def area_ranges(areas: Sequence[float] = DEFAULT_AREAS) -> list[list[float]]:
    """COCOeval ``areaRng`` for all / small / medium / large from the three upper limits."""
    small, medium, large = areas
    return [[0, large], [0, small], [small, medium], [medium, large]]


def _detections_coco(gt: dict, dets: Sequence[dict]) -> dict:
    """A COCO result set as a dataset dict (no ``loadRes``: it fails on an empty list)."""
    anns = []
    for n, det in enumerate(dets, start=1):
        x, y, w, h = det['bbox']
        anns.append(dict(det, id=n, area=w * h, iscrowd=0))
    return dict(images=gt['images'], categories=gt['categories'], annotations=anns)


def precision(gt: dict, dets: Sequence[dict], iou_thrs: Sequence[float], cat_ids: list[int],
              areas: Sequence[float], img_ids: list | None = None) -> np.ndarray:
    """COCOeval precision ``(T, R=101, K, A=4)`` at ``MAX_DETS``; -1 where no ground truth."""
    coco_gt = load_coco('pycocotools', gt)
    coco_dt = load_coco('pycocotools', _detections_coco(gt, dets))
    from pycocotools.cocoeval import COCOeval
    coco_eval = COCOeval(coco_gt, coco_dt, 'bbox')
    coco_eval.params.imgIds = img_ids if img_ids is not None else coco_gt.getImgIds()
    coco_eval.params.catIds = cat_ids
    coco_eval.params.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
    coco_eval.params.maxDets = [MAX_DETS]
    coco_eval.params.areaRng = area_ranges(areas)
    coco_eval.params.areaRngLbl = list(AREA_NAMES)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval.evaluate()
        coco_eval.accumulate()
    return np.asarray(coco_eval.eval['precision'])[..., 0]


def _forgiving_gt(gt: dict, cat_id: int, forgiven: set[int]) -> dict:
    """``gt`` where the boxes of the ``forgiven`` categories are crowd boxes of ``cat_id``."""
    anns = [dict(a, category_id=cat_id, iscrowd=1, ignore=1)
            if a['category_id'] in forgiven else a for a in gt['annotations']]
    return dict(gt, annotations=anns)


def _relaxed_class_curves(gt: dict, dets: Sequence[dict], cat_id: int,
                          areas: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``(Sim, Oth)`` precision ``(R, A)`` of one class at IoU 0.1."""
    supercategory = {c['id']: c.get('supercategory') for c in gt['categories']}
    own = [d for d in dets if d['category_id'] == cat_id]
    # Only images with a box or a detection of this class can change its curve.
    img_ids = sorted({d['image_id'] for d in own} |
                     {a['image_id'] for a in gt['annotations'] if a['category_id'] == cat_id})
    similar = {c for c, s in supercategory.items()
               if c != cat_id and s is not None and s == supercategory[cat_id]}
    others = set(supercategory) - {cat_id}
    curves = [precision(_forgiving_gt(gt, cat_id, forgiven), own, [0.1], [cat_id], areas,
                        img_ids)[0, :, 0] for forgiven in (similar, others)]
    return curves[0], curves[1]


def error_curves(gt: dict, dets: Sequence[dict], areas: Sequence[float] = DEFAULT_AREAS,
                 progress: bool = True) -> tuple[np.ndarray, list[int]]:
    """The seven stacked PR curves of every class.

    Args:
        gt: a COCO ground-truth dict (``images``, ``annotations``, ``categories``).
        dets: COCO results (``image_id``, ``category_id``, ``bbox`` xywh, ``score``).

    Returns:
        ``(curves, cat_ids)``: ``curves`` ``(7, R=101, K, A=4)`` in ``ERROR_TYPES`` order,
        NaN where the class has no ground truth in the area range; ``K`` follows the sorted
        category ids ``cat_ids``.
    """
    gt = copy.deepcopy(gt)
    for ann in gt['annotations']:  # COCOeval reads both; minimal files may leave them out
        ann.setdefault('iscrowd', 0)
        ann.setdefault('area', ann['bbox'][2] * ann['bbox'][3])
    cat_ids = sorted(c['id'] for c in gt['categories'])
    base = precision(gt, dets, [0.75, 0.5, 0.1], cat_ids, areas)  # (3, R, K, A)
    curves = np.full((len(ERROR_TYPES), *base.shape[1:]), np.nan)
    curves[:3] = base
    for k, cat_id in enumerate(track_iter_progress(cat_ids) if progress else cat_ids):
        curves[3, :, k], curves[4, :, k] = _relaxed_class_curves(gt, dets, cat_id, areas)
    curves[5] = (curves[4] > 0).astype(np.float64)
    curves[6] = 1.0
    no_gt = np.broadcast_to(base[0] == -1, curves.shape)
    curves[no_gt] = np.nan
    return curves, cat_ids


def summarise(curves: np.ndarray, cat_ids: list[int], names: dict[int, str]) -> dict:
    """``dict(overall={area: {type: AP}}, per_class={name: {area: {type: AP or None}}})``."""
    def table(ps: np.ndarray) -> dict:  # ps (7, R, A), NaN where undefined
        return {area: {t: (None if np.isnan(ps[i, :, a]).all()
                           else float(np.nanmean(ps[i, :, a])))
                       for i, t in enumerate(ERROR_TYPES)}
                for a, area in enumerate(AREA_NAMES)}

    with np.errstate(invalid='ignore'), _quiet_nanmean():
        overall = np.nanmean(curves, axis=2)  # mean over the classes with ground truth
        return dict(overall=table(overall),
                    per_class={names[c]: table(curves[:, :, k]) for k, c in enumerate(cat_ids)})


@contextlib.contextmanager
def _quiet_nanmean():
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Mean of empty slice')
        yield


COLORS = ('#dbe9f6', '#9ecae1', '#4f81bd', '#c0504d', '#5ce65c', '#8064a2', '#ff9900')


def plot_curves(recall: np.ndarray, ps: np.ndarray, title: str, path: str) -> None:
    """One stacked-area PR plot: ``ps`` ``(7, R)`` curves in ``ERROR_TYPES`` order."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    lower = np.zeros_like(recall)
    for i, name in enumerate(ERROR_TYPES):
        upper = np.nan_to_num(ps[i])
        ax.plot(recall, upper, color='black', linewidth=0.5)
        ax.fill_between(recall, lower, upper, color=COLORS[i], edgecolor='none',
                        label=f'[{float(np.mean(upper)):.3f}] {name}')
        lower = upper
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel='recall', ylabel='precision', title=title)
    ax.legend(loc='lower left', fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def check_detections(dets: object, gt: dict, source: str) -> list[dict]:
    """The COCO result list of ``source``, checked against the ground truth's ids."""
    if not isinstance(dets, list) or not all(isinstance(d, dict) for d in dets):
        raise ValueError(f'{source} is not a COCO result list [{{"image_id", "category_id", '
                         f'"bbox", "score"}}, ...]; tools/test.py writes one with '
                         f'--cfg-options test_evaluator.outfile_prefix=PREFIX.')
    keys = ('image_id', 'category_id', 'bbox', 'score')
    bad = next((n for n, d in enumerate(dets) if any(k not in d for k in keys)), None)
    if bad is not None:
        raise ValueError(f'{source}: result {bad} lacks one of {keys}: {dets[bad]}')
    for field, known in (('image_id', {i['id'] for i in gt['images']}),
                         ('category_id', {c['id'] for c in gt['categories']})):
        unknown = sorted({d[field] for d in dets} - known, key=str)
        if unknown:
            raise ValueError(f'{source}: {field}s {unknown[:10]} are not in the annotation '
                             f'file; predictions and annotations must be of the same split.')
    return dets


def write_error_analysis(gt: dict, dets: Sequence[dict], out_dir: str,
                         areas: Sequence[float] = DEFAULT_AREAS,
                         class_plots: bool = True) -> dict:
    """Curves, PNGs (``overall-<area>.png``, ``per_class/<class>-<area>.png``) and
    ``error_analysis.json`` in ``out_dir``; returns the summary (see ``summarise``)."""
    import json
    import os
    import os.path as osp
    import re

    curves, cat_ids = error_curves(gt, dets, areas)
    names = {c['id']: c['name'] for c in gt['categories']}
    summary = summarise(curves, cat_ids, names)
    recall = np.linspace(0, 1, curves.shape[1])
    os.makedirs(out_dir, exist_ok=True)
    with np.errstate(invalid='ignore'), _quiet_nanmean():
        overall = np.nanmean(curves, axis=2)
    for a, area in enumerate(AREA_NAMES):
        plot_curves(recall, overall[:, :, a], f'overall, {area}',
                    osp.join(out_dir, f'overall-{area}.png'))
    if class_plots:
        os.makedirs(osp.join(out_dir, 'per_class'), exist_ok=True)
        for k, cat_id in enumerate(cat_ids):
            safe = re.sub(r'[^\w.-]+', '_', names[cat_id])
            for a, area in enumerate(AREA_NAMES):
                if not np.isnan(curves[0, :, k, a]).all():
                    plot_curves(recall, curves[:, :, k, a], f'{names[cat_id]}, {area}',
                                osp.join(out_dir, 'per_class', f'{safe}-{area}.png'))
    with open(osp.join(out_dir, 'error_analysis.json'), 'w') as f:
        json.dump(dict(summary, error_types=list(ERROR_TYPES),
                       area_ranges=dict(zip(AREA_NAMES, area_ranges(areas))),
                       max_dets=MAX_DETS), f, indent=1)
    return summary
