"""Datasets: COCO-format loaders (COCO, LVIS v1, Objects365), converters, synthetic data,
the aspect-ratio batch sampler."""
# mmcv registers its generic transforms (RandomResize, RandomChoiceResize, RandomChoice, ...)
# in mmengine's root registry, which codetr's TRANSFORMS inherits from.
import mmcv.transforms  # noqa: F401

from . import transforms  # noqa: F401
from .class_names import COCO_CLASSES, make_palette
from .coco import CocoDataset
from .converters import yolo_to_coco
from .dataset_wrappers import MultiImageMixDataset
from .lvis import LVISV1Dataset
from .objects365 import Objects365V1Dataset, Objects365V2Dataset
from .samplers import AspectRatioBatchSampler
from .synthetic import SYNTHETIC_CLASSES, make_synthetic_dataset
from .validation import ValidationReport

__all__ = ['COCO_CLASSES', 'SYNTHETIC_CLASSES', 'AspectRatioBatchSampler', 'CocoDataset',
           'LVISV1Dataset', 'MultiImageMixDataset', 'Objects365V1Dataset',
           'Objects365V2Dataset', 'ValidationReport', 'make_palette', 'make_synthetic_dataset',
           'yolo_to_coco']
