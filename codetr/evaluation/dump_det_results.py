"""``DumpDetResults``: write raw predictions to a file (``tools/test.py --out``), and read
them back (``load_det_results``) for the analysis tools."""
from __future__ import annotations

import json
import os
import os.path as osp
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np
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


def load_det_results(path: str) -> list[dict]:
    """The records ``DumpDetResults`` wrote to ``path`` (``.pkl`` / ``.pickle`` / ``.json``).

    Returns one ``dict(img_id, img_path, ori_shape, pred_instances=dict(bboxes (K, 4) float64
    xyxy original pixels, scores (K,) float64, labels (K,) int64))`` per image, numpy arrays
    whatever the file format. Raises a ``ValueError`` naming the file and the record when
    the content is not such a list.
    """
    if not path.endswith(SUFFIXES):
        raise ValueError(f'{path}: predictions must be a .pkl/.pickle or .json file written by '
                         f'tools/test.py --out, got another suffix.')
    if not osp.isfile(path):
        raise FileNotFoundError(f'predictions file not found: {path}')
    if path.endswith('.json'):
        with open(path) as f:
            records = json.load(f)
    else:
        with open(path, 'rb') as f:
            records = _ArrayUnpickler(f).load()
    if not isinstance(records, list):
        raise ValueError(f'{path} holds a {type(records).__name__}, not the list of per-image '
                         f'records that tools/test.py --out writes.')
    return [_checked_record(path, i, r) for i, r in enumerate(records)]


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles builtins and numpy arrays / scalars / dtypes only (no code from the file)."""

    _NUMPY_MODULES = ('numpy', 'numpy.core.multiarray', 'numpy._core.multiarray',
                      'numpy.dtypes')
    _NUMPY_NAMES = ('_reconstruct', 'ndarray', 'dtype', 'scalar')

    def find_class(self, module: str, name: str) -> type:
        if module in self._NUMPY_MODULES and (name in self._NUMPY_NAMES or
                                              module == 'numpy.dtypes'):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f'{module}.{name} is not allowed in a predictions file (only numpy arrays); was it '
            f'written by tools/test.py --out?')


def _checked_record(path: str, index: int, record: object) -> dict:
    if not isinstance(record, dict) or 'img_id' not in record or \
            not isinstance(record.get('pred_instances'), dict):
        raise ValueError(f'{path}: record {index} is not dict(img_id, pred_instances=dict('
                         f'bboxes, scores, labels)); was the file written by tools/test.py '
                         f'--out?')
    pred = record['pred_instances']
    missing = [k for k in ('bboxes', 'scores', 'labels') if k not in pred]
    if missing:
        raise ValueError(f'{path}: record {index} (img_id {record["img_id"]}) has no '
                         f'pred_instances {missing}.')
    out = dict(record)
    out['pred_instances'] = dict(
        bboxes=np.asarray(pred['bboxes'], dtype=np.float64).reshape(-1, 4),
        scores=np.asarray(pred['scores'], dtype=np.float64).reshape(-1),
        labels=np.asarray(pred['labels'], dtype=np.int64).reshape(-1))
    return out
