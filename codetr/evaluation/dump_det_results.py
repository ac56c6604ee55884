"""``DumpDetResults``: write raw predictions to a file (``tools/test.py --out``)."""
from __future__ import annotations

import json
import os
import os.path as osp
import pickle
from collections.abc import Sequence
from typing import Any

from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from codetr.registry import METRICS

from .coco_format import unpack_prediction

SUFFIXES = ('.pkl', '.pickle', '.json')


@METRICS.register_module()
class DumpDetResults(BaseMetric):
    """Dump every image's ``pred_instances`` to ``out_file_path`` and report no metric.

    Each record is ``dict(img_id, img_path, ori_shape, pred_instances=dict(bboxes (K, 4)
    xyxy original pixels, scores (K,), labels (K,)))``: numpy arrays in a pickle
    (``.pkl``/``.pickle``), nested lists in ``.json``. Predicted masks are stored as
    ``masks``: K COCO RLE dicts (MMDetection's dump format).
    """

    def __init__(self, out_file_path: str, collect_device: str = 'cpu',
                 prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if not out_file_path.endswith(SUFFIXES):
            raise ValueError(f'out_file_path={out_file_path!r} must end with one of {SUFFIXES}.')
        self.out_file_path = out_file_path

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            pred = unpack_prediction(sample, with_masks=True)
            instances = dict(bboxes=pred['bboxes'], scores=pred['scores'],
                             labels=pred['labels'])
            if 'masks' in pred:
                instances['masks'] = pred['masks']
            self.results.append(dict(
                img_id=sample['img_id'], img_path=sample.get('img_path'),
                ori_shape=tuple(sample.get('ori_shape', ())), pred_instances=instances))

    def compute_metrics(self, results: list) -> dict:
        out_dir = osp.dirname(osp.abspath(self.out_file_path))
        os.makedirs(out_dir, exist_ok=True)
        if self.out_file_path.endswith('.json'):
            records = [dict(r, pred_instances={k: v if k == 'masks' else v.tolist()
                                               for k, v in r['pred_instances'].items()})
                       for r in results]
            with open(self.out_file_path, 'w') as f:
                json.dump(records, f)
        else:
            with open(self.out_file_path, 'wb') as f:
                pickle.dump(results, f)
        MMLogger.get_current_instance().info(
            f'{len(results)} images\' predictions dumped to {self.out_file_path}')
        return {}
