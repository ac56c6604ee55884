"""Metrics: COCO and LVIS box AP, and a raw-prediction dump for ``tools/test.py --out``."""
from .coco_metric import CocoMetric
from .dump_det_results import DumpDetResults
from .lvis_eval import LVISFederatedEval
from .lvis_metric import LVISMetric

__all__ = ['CocoMetric', 'DumpDetResults', 'LVISFederatedEval', 'LVISMetric']
