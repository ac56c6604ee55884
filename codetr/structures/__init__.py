from .box_ops import (
                      bbox_area,
                      bbox_cxcywh_to_xyxy,
                      bbox_flip,
                      bbox_overlaps,
                      bbox_rescale,
                      bbox_xyxy_to_cxcywh,
                      clip_bboxes,
                      generalized_box_iou,
                      scale_boxes,
)
from .det_data_sample import DetDataSample, OptSampleList, SampleList
from .mask import BitmapMasks, PolygonMasks

__all__ = [
    'DetDataSample', 'SampleList', 'OptSampleList', 'bbox_area', 'bbox_cxcywh_to_xyxy',
    'bbox_xyxy_to_cxcywh', 'bbox_overlaps', 'generalized_box_iou', 'bbox_flip', 'clip_bboxes',
    'scale_boxes', 'bbox_rescale', 'BitmapMasks', 'PolygonMasks'
]
