"""Metrics: COCO and LVIS box AP, a raw-prediction dump for ``tools/test.py --out`` and the
offline evaluation of such a dump."""
from .coco_metric import CocoMetric
from .dump_det_results import DumpDetResults, load_det_results
from .lvis_eval import LVISFederatedEval
from .lvis_metric import LVISMetric
from .offline import evaluate_det_results

__all__ = ['CocoMetric', 'DumpDetResults', 'LVISFederatedEval', 'LVISMetric',
           'evaluate_det_results', 'load_det_results']
