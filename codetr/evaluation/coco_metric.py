"""COCO box and mask AP through faster-coco-eval (default) or pycocotools (the reference).

Both give the same numbers for every value this metric reports (the 12 COCOeval stats of
``bbox`` and ``segm``, the AR values of ``proposal`` and the per-class precision; tested on
crowd boxes, tied scores and images without boxes); faster-coco-eval computes them in C++.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os.path as osp
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.fileio import get_local_path
from mmengine.logging import MMLogger
from terminaltables import AsciiTable

from codetr.datasets.validation import repeated_ids
from codetr.registry import METRICS
from codetr.utils.progress import Progress

from .coco_format import (
    check_img_ids,
    dataset_classes,
    gt_to_coco_dict,
    label_to_cat_ids,
    preds_to_coco_json,
    unpack_prediction,
)

# Index of each reported value in COCOeval.stats (the order of its 12-line summary); the same
# for 'bbox' and 'segm'.
BBOX_STATS = {'mAP': 0, 'mAP_50': 1, 'mAP_75': 2, 'mAP_s': 3, 'mAP_m': 4, 'mAP_l': 5}
METRICS_SUPPORTED = ('bbox', 'segm', 'proposal')
BACKENDS = ('pycocotools', 'faster_coco_eval')


def coco_api(backend: str) -> tuple[type, type]:
    """``(COCO, COCOeval)`` classes of a backend; both expose pycocotools' interface."""
    if backend == 'pycocotools':
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        return COCO, COCOeval
    if backend == 'faster_coco_eval':
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError as err:
            raise ImportError(f'backend="faster_coco_eval" needs the faster-coco-eval package '
                              f'(pip install faster-coco-eval), or set backend="pycocotools" '
                              f'in the evaluator config: {err}') from err
        return COCO, COCOeval_faster
    raise ValueError(f'backend={backend!r} is not one of {BACKENDS}.')


def load_coco(backend: str, source: str | dict) -> Any:
    """A backend COCO object from an annotation file path or an in-memory COCO dict."""
    coco_cls, _ = coco_api(backend)
    if isinstance(source, str):
        with get_local_path(source) as local_path:
            return coco_cls(local_path)
    if backend == 'faster_coco_eval':
        return coco_cls(source)
    coco = coco_cls()  # pycocotools only reads files; fill an empty one in memory
    coco.dataset = source
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def run_cocoeval(backend: str, coco_gt: Any, json_results: list[dict], img_ids: Sequence,
                 cat_ids: Sequence[int], proposal_nums: Sequence[int] | None = None,
                 desc: str = 'COCO bbox', iou_type: str = 'bbox') -> tuple[Any, str]:
    """Evaluate, accumulate and summarise COCO results with one backend.

    Args:
        coco_gt: the backend's COCO object of the ground truth (:func:`load_coco`).
        json_results: COCO result dicts (``image_id``, ``bbox`` xywh, ``score``,
            ``category_id``); not empty.
        img_ids / cat_ids: the images and categories scored.
        proposal_nums: class-agnostic recall at these detection counts per image (the
            ``'proposal'`` metric) instead of class-aware AP at 1 / 10 / 100.
        desc: what the progress bar and the logged stage times call this evaluation.
        iou_type: ``'bbox'`` (boxes) or ``'segm'`` (RLE masks in ``json_results``).

    Returns:
        The backend's COCOeval object (``stats``: the summary values, ``eval['precision']``
        ``(T, R, K, A, M)``, ``eval['recall']`` ``(T, K, A, M)``) and its printed summary.
    """
    _, eval_cls = coco_api(backend)
    coco_dt = coco_gt.loadRes(copy.deepcopy(json_results))  # loadRes edits its input
    # faster-coco-eval logs its summary through `logging` unless given a print function;
    # with print it lands in the captured summary, as pycocotools' does.
    extra = dict(print_function=print) if backend == 'faster_coco_eval' else {}
    coco_eval = eval_cls(coco_gt, coco_dt, iou_type, **extra)
    coco_eval.params.imgIds = list(img_ids)
    coco_eval.params.catIds = list(cat_ids)
    if proposal_nums is not None:
        coco_eval.params.useCats = 0
        coco_eval.params.maxDets = list(proposal_nums)
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):  # the progress bar goes to stderr
        seconds = run_stages(coco_eval, desc, count_calls=backend == 'pycocotools')
    MMLogger.get_current_instance().info(
        f'{desc} evaluation of {len(set(img_ids))} images: '
        + ', '.join(f'{stage} {t:.1f} s' for stage, t in seconds.items()))
    return coco_eval, summary.getvalue()


@METRICS.register_module()
class CocoMetric(BaseMetric):
    """COCO detection metric with MMDetection's keys (``coco/bbox_mAP``, ``_50``, ...).

    Args:
        ann_file: COCO json of the evaluated split. ``None`` builds the ground truth from
            each data sample's ``instances`` (add ``'instances'`` to PackDetInputs'
            ``meta_keys``); category id ``i`` is then label ``i``.
        metric: one or a list of ``'bbox'`` (class-aware box AP), ``'segm'`` (mask AP of
            ``pred_instances.masks``; keys ``coco/segm_mAP`` ...) and ``'proposal'``
            (class-agnostic AR at ``proposal_nums`` detections per image). Masks are
            RLE-encoded image by image as predictions arrive.
        classwise: also log a per-class AP table.
        proposal_nums: max detections per image for ``'proposal'`` recall.
        format_only: only write ``<outfile_prefix>.bbox.json`` (and ``.segm.json`` with
            ``'segm'``), e.g. for a test-dev submission.
        outfile_prefix: where result json files go; required with ``format_only``.
        backend: ``'faster_coco_eval'`` (default) or ``'pycocotools'``: the same numbers.
        sort_categories: order the class-wise table by category id instead of ``classes``.
    """

    default_prefix = 'coco'

    def __init__(self, ann_file: str | None = None, metric: str | Sequence[str] = 'bbox',
                 classwise: bool = False, proposal_nums: Sequence[int] = (100, 300, 1000),
                 format_only: bool = False, outfile_prefix: str | None = None,
                 backend: str = 'faster_coco_eval', collect_device: str = 'cpu',
                 prefix: str | None = None, sort_categories: bool = False) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.metrics = [metric] if isinstance(metric, str) else list(metric)
        for name in self.metrics:
            if name not in METRICS_SUPPORTED:
                raise ValueError(f'metric={name!r} is not supported; use one or more of '
                                 f'{METRICS_SUPPORTED}.')
        if format_only and outfile_prefix is None:
            raise ValueError('format_only=True writes <outfile_prefix>.bbox.json; set '
                             'outfile_prefix, e.g. "./work_dirs/coco_test_dev/results".')
        coco_api(backend)  # fail at build time on a bad backend name
        self.backend = backend
        self.classwise = classwise
        self.proposal_nums = list(proposal_nums)
        self.format_only = format_only
        self.outfile_prefix = outfile_prefix
        self.sort_categories = sort_categories
        self.ann_file = ann_file
        self._coco_gt = load_coco(backend, ann_file) if ann_file is not None else None
        if self._coco_gt is not None:
            check_unique_ids(self._coco_gt.dataset, ann_file)

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Keep each image's predictions (numpy) and, without ``ann_file``, its GT."""
        for sample in data_samples:
            pred = unpack_prediction(sample, with_masks='segm' in self.metrics)
            gt = None
            if self._coco_gt is None:
                if 'instances' not in sample:
                    raise KeyError(
                        'CocoMetric without ann_file builds the ground truth from each data '
                        'sample\'s `instances`; add "instances" to the meta_keys of '
                        'PackDetInputs in the test pipeline, or set ann_file.')
                height, width = sample['ori_shape'][:2]
                gt = dict(img_id=sample['img_id'], width=width, height=height,
                          anns=sample['instances'])
            self.results.append((pred, gt))

    def compute_metrics(self, results: list) -> dict[str, float]:
        logger = MMLogger.get_current_instance()
        preds, gts = zip(*results) if results else ((), ())
        classes = dataset_classes(self.dataset_meta)
        coco_gt = self._coco_gt
        if coco_gt is None:
            coco_gt = load_coco(self.backend, gt_to_coco_dict(gts, classes))
        check_img_ids([p['img_id'] for p in preds], coco_gt.getImgIds(), self.ann_file)
        cat_ids = label_to_cat_ids(classes, coco_gt.dataset['categories'], self.ann_file)
        json_results = {'bbox': preds_to_coco_json(preds, cat_ids)}
        if 'segm' in self.metrics:
            check_gt_segmentations(coco_gt.dataset, self.ann_file)
            json_results['segm'] = preds_to_coco_json(preds, cat_ids, segm=True)
        if self.outfile_prefix is not None:
            for kind, entries in json_results.items():
                out_file = f'{self.outfile_prefix}.{kind}.json'
                with open(out_file, 'w') as f:
                    json.dump(entries, f)
                logger.info(f'Detections written to {osp.abspath(out_file)}')
        if self.format_only:
            return {}
        img_ids = [p['img_id'] for p in preds]
        metrics: dict[str, float] = {}
        for metric in self.metrics:
            entries = json_results['segm' if metric == 'segm' else 'bbox']
            metrics.update(self._evaluate(metric, coco_gt, entries, img_ids, cat_ids, classes))
        return metrics

    def _evaluate(self, metric: str, coco_gt: Any, json_results: list[dict],
                  img_ids: list, cat_ids: list[int], classes: Sequence[str]) -> dict[str, float]:
        """Run COCOeval for one metric kind and log its summary (and table)."""
        logger = MMLogger.get_current_instance()
        names = (list(BBOX_STATS) if metric != 'proposal' else
                 [f'AR@{n}' for n in self.proposal_nums] +
                 [f'AR_{s}@{self.proposal_nums[-1]}' for s in 'sml'])
        keys = [f'{metric}_{n}' if metric != 'proposal' else n for n in names]
        if not json_results:
            logger.warning('There are no detections at all; every metric is 0.')
            return dict.fromkeys(keys, 0.0)
        proposal_nums = self.proposal_nums if metric == 'proposal' else None
        coco_eval, summary = run_cocoeval(self.backend, coco_gt, json_results, img_ids,
                                          cat_ids, proposal_nums, desc=f'COCO {metric}',
                                          iou_type='segm' if metric == 'segm' else 'bbox')
        logger.info(f'Evaluating {metric}:\n{summary}')
        stats = np.asarray(coco_eval.stats, dtype=np.float64)
        # 'proposal' reads AR@maxDets[0..2] at stats 6..8 and AR s/m/l at stats 9..11.
        indices = list(BBOX_STATS.values()) if metric != 'proposal' else [6, 7, 8, 9, 10, 11]
        values = {key: float(stats[i]) for key, i in zip(keys, indices)}
        if metric != 'proposal':
            logger.info(f'{metric}_mAP_copypaste: ' +
                        ' '.join(f'{v:.3f}' for v in values.values()))
            if self.classwise:
                precision = np.asarray(coco_eval.eval['precision'])
                logger.info('\n' + self.classwise_table(precision, cat_ids, classes))
        return values

    def classwise_table(self, precision: np.ndarray, cat_ids: Sequence[int],
                        classes: Sequence[str]) -> str:
        """Per-class AP table from COCOeval's ``precision`` ``(T, R, K, A, M)``.

        ``K`` runs over the sorted category ids (COCOeval sorts them); ``M = -1`` is the
        100-detection setting, ``A = 0..3`` the all/small/medium/large areas.
        """
        column_of = {cat: k for k, cat in enumerate(sorted(set(cat_ids)))}
        order = range(len(classes))
        if self.sort_categories:
            order = sorted(order, key=lambda i: cat_ids[i])
        rows = [['category', 'mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l']]
        for i in order:
            k = column_of[cat_ids[i]]
            cells = [precision[:, :, k, 0, -1], precision[0, :, k, 0, -1],
                     precision[5, :, k, 0, -1]]  # IoU thresholds .50:.05:.95: 0 -> .5, 5 -> .75
            cells += [precision[:, :, k, area, -1] for area in (1, 2, 3)]
            rows.append([classes[i]] + [_mean_valid(c) for c in cells])
        table = AsciiTable(rows)
        table.inner_footing_row_border = False
        return table.table


def check_gt_segmentations(gt: dict, ann_file: str | None) -> None:
    """Raise if a ground-truth annotation has no ``segmentation`` (box-only data)."""
    missing = [ann.get('id') for ann in gt.get('annotations', []) if not ann.get('segmentation')]
    if missing:
        raise ValueError(f'metric "segm" needs a segmentation for every ground-truth '
                         f'annotation; {len(missing)} in {ann_file or "the ground truth"} have '
                         f'none (ids {missing[:10]}). Evaluate "bbox" only on box-only data.')


def check_unique_ids(dataset: dict, ann_file: str) -> None:
    """Repeated image or annotation ids make pycocotools score the wrong boxes (its index
    keeps one record per id): raise naming them."""
    for key, what in (('images', 'image'), ('annotations', 'annotation')):
        repeats = sorted(set(repeated_ids(r['id'] for r in dataset.get(key, []) if 'id' in r)))
        if repeats:
            raise ValueError(f'{ann_file} repeats {what} ids {repeats[:5]}'
                             + (f' and {len(repeats) - 5} more' if len(repeats) > 5 else '')
                             + f'; COCO evaluation keeps one record per id and would score '
                             f'the wrong boxes: give every {what} its own id.')


def _counting(method: Callable, progress: Progress, every: int) -> Callable:
    """``method`` that advances ``progress`` by ``every`` after each ``every`` calls."""
    calls = 0

    def counted(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls % every == 0:
            progress.update(every)
        return method(*args)
    return counted


def run_stages(coco_eval: Any, desc: str, count_calls: bool) -> dict[str, float]:
    """``evaluate``, ``accumulate`` and ``summarize`` of a COCOeval; returns their seconds.

    pycocotools' ``evaluate`` runs in Python, one ``computeIoU`` per (image, category) and
    one ``evaluateImg`` per (category, area range, image): with ``count_calls`` counting
    those calls drives a progress bar over it. faster-coco-eval matches in C++ (it skips
    empty pairs), so it gets the timed stages only.
    """
    params = coco_eval.params
    num_img = len(set(params.imgIds))
    num_cat = len(set(params.catIds)) if params.useCats else 1
    seconds: dict[str, float] = {}
    progress = None
    if count_calls:
        total = num_img * num_cat * (1 + len(params.areaRng))
        progress = Progress(total, desc, unit='evals')
        coco_eval.computeIoU = _counting(coco_eval.computeIoU, progress, max(num_img, 1))
        coco_eval.evaluateImg = _counting(coco_eval.evaluateImg, progress, max(num_img, 1))
    for stage in ('evaluate', 'accumulate', 'summarize'):
        start = time.perf_counter()
        getattr(coco_eval, stage)()
        seconds[stage] = time.perf_counter() - start
        if stage == 'evaluate' and progress is not None:
            progress.close()
    return seconds


def _mean_valid(values: np.ndarray) -> str:
    """Mean of the entries COCOeval filled (-1 marks "no GT"), formatted; 'nan' if none."""
    valid = values[values > -1]
    return f'{float(np.mean(valid)):.3f}' if valid.size else 'nan'
