"""Inference: build a detector from a config and checkpoint, predict, draw and save."""
from .det_inferencer import DetInferencer, expand_inputs
from .inference import (
    build_test_pipeline,
    inference_detector,
    init_deployed_detector,
    init_detector,
)

__all__ = ['DetInferencer', 'build_test_pipeline', 'expand_inputs', 'inference_detector',
           'init_deployed_detector', 'init_detector']
