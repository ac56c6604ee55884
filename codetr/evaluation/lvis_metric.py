"""LVIS v1 box and mask AP (federated) with MMDetection's keys: ``lvis/bbox_AP``,
``lvis/bbox_APr``, ``lvis/segm_AP`` ..."""
from __future__ import annotations

import itertools
import json
import os.path as osp
import time
from collections.abc import Sequence
from typing import Any

from mmengine.evaluator import BaseMetric
from mmengine.fileio import get_local_path
from mmengine.logging import MMLogger
from terminaltables import AsciiTable

from codetr.registry import METRICS

from .coco_format import dataset_classes, label_to_cat_ids, preds_to_coco_json, unpack_prediction
from .lvis_eval import LVISFederatedEval

# Reported keys, in the order the log line prints them (MMDetection's LVISMetric names).
REPORTED = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc', 'APf')


@METRICS.register_module()
class LVISMetric(BaseMetric):
    """LVIS v1 federated detection metric (see ``lvis_eval`` for the rules).

    Args:
        ann_file: LVIS v1 json of the evaluated split (``lvis_v1_val.json``).
        metric: ``'bbox'``, ``'segm'`` or both (mask AP of ``pred_instances.masks``, which
            are RLE-encoded image by image as they arrive, so LVIS's 300 detections per image
            never stay in memory as dense masks).
        classwise: also log per-category AP.
        max_dets: detections kept per image over all categories (LVIS: 300).
        format_only: only write ``<outfile_prefix>.bbox.json`` (and ``.segm.json``).
        outfile_prefix: where the result json goes; required with ``format_only``.

    Only the images that reached ``process`` are evaluated, so a partial run scores the
    images it saw rather than counting every other image as missed.
    """

    default_prefix = 'lvis'

    def __init__(self, ann_file: str, metric: str | Sequence[str] = 'bbox',
                 classwise: bool = False, max_dets: int = 300, format_only: bool = False,
                 outfile_prefix: str | None = None, collect_device: str = 'cpu',
                 prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.metrics = [metric] if isinstance(metric, str) else list(metric)
        if not self.metrics or not set(self.metrics) <= {'bbox', 'segm'}:
            raise ValueError(f'metric={metric!r}: LVISMetric evaluates "bbox" and / or "segm".')
        if format_only and outfile_prefix is None:
            raise ValueError('format_only=True writes <outfile_prefix>.bbox.json; set '
                             'outfile_prefix.')
        self.ann_file = ann_file
        with get_local_path(ann_file) as local_path, open(local_path) as f:
            self._gt = json.load(f)
        self.classwise = classwise
        self.max_dets = max_dets
        self.format_only = format_only
        self.outfile_prefix = outfile_prefix

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        with_masks = 'segm' in self.metrics
        # LVIS scores the top max_dets detections of an image: the rest need no encoding
        self.results.extend(unpack_prediction(sample, with_masks=with_masks, top_k=self.max_dets)
                            for sample in data_samples)

    def compute_metrics(self, results: list) -> dict[str, float]:
        logger = MMLogger.get_current_instance()
        classes = dataset_classes(self.dataset_meta)
        cat_ids = label_to_cat_ids(classes, self._gt['categories'], self.ann_file)
        json_results = {kind: preds_to_coco_json(results, cat_ids, segm=kind == 'segm')
                        for kind in ['bbox'] + (['segm'] if 'segm' in self.metrics else [])}
        if self.outfile_prefix is not None:
            for kind, entries in json_results.items():
                out_file = f'{self.outfile_prefix}.{kind}.json'
                with open(out_file, 'w') as f:
                    json.dump(entries, f)
                logger.info(f'Detections written to {osp.abspath(out_file)}')
        if self.format_only:
            return {}
        metrics = {}
        for kind in self.metrics:
            start = time.perf_counter()
            lvis_eval = LVISFederatedEval(self._gt, json_results[kind],
                                          img_ids=[r['img_id'] for r in results],
                                          max_dets=self.max_dets, iou_type=kind)
            seconds = dict(group=time.perf_counter() - start)
            lvis_eval.evaluate(show_progress=True)
            seconds['evaluate'] = time.perf_counter() - start - seconds['group']
            stats = lvis_eval.summarize()
            logger.info(f'LVIS {kind} evaluation of {len(lvis_eval.img_ids)} images: '
                        + ', '.join(f'{stage} {t:.1f} s' for stage, t in seconds.items()))
            logger.info(f'LVIS {kind} results:\n' + '\n'.join(f'  {k:>8}: {v:.3f}'
                                                              for k, v in stats.items()))
            logger.info(f'{kind}_AP_copypaste: ' +
                        ' '.join(f'{stats[k]:.3f}' for k in REPORTED))
            if self.classwise:
                logger.info('\n' + self._classwise_table(lvis_eval))
            metrics.update({f'{kind}_{k}': stats[k] for k in REPORTED})
        return metrics

    def _classwise_table(self, lvis_eval: LVISFederatedEval) -> str:
        """AP per category over IoU .50:.95, area all; three (name, AP) pairs per row."""
        names = {cat['id']: cat['name'] for cat in self._gt['categories']}
        cells = []
        for k, cat_id in enumerate(lvis_eval.cat_ids):
            valid = lvis_eval.precision[:, :, k, 0]
            valid = valid[valid > -1]
            cells += [names[cat_id], f'{valid.mean():.3f}' if valid.size else 'nan']
        columns = 6
        cells += [''] * (-len(cells) % columns)
        rows = [list(row) for row in itertools.zip_longest(*[iter(cells)] * columns)]
        table = AsciiTable([['category', 'AP'] * (columns // 2)] + rows)
        return table.table
