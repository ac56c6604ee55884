"""Metrics: COCO and LVIS box AP, and a raw-prediction dump for ``tools/test.py --out``."""
from .coco_metric import CocoMetric
from .dump_det_results import DumpDetResults

__all__ = ['CocoMetric', 'DumpDetResults']
