"""``DetDataSample``: the per-image container that travels from the pipeline to the metric.

Field names are MMDetection's so that configs, hooks and habits carry over:

- ``gt_instances``: ``bboxes (N, 4)`` float xyxy pixels of the network input, ``labels (N,)``
  long in ``[0, num_classes)``.
- ``ignored_instances``: the same fields for boxes to ignore (COCO ``iscrowd``).
- ``pred_instances``: ``bboxes (K, 4)``, ``scores (K,)``, ``labels (K,)``.
- metainfo: ``img_id, img_path, ori_shape, img_shape, scale_factor, flip, flip_direction,
  pad_shape, batch_input_shape``.
"""
from mmengine.structures import BaseDataElement, InstanceData


class DetDataSample(BaseDataElement):
    """One image's annotations and predictions (see the module docstring for the fields)."""

    def _instances_property(name: str, doc: str):  # noqa: N805 - used at class build time
        private = f'_{name}'

        def getter(self) -> InstanceData:
            return getattr(self, private)

        def setter(self, value: InstanceData) -> None:
            self.set_field(value, private, dtype=InstanceData)

        def deleter(self) -> None:
            delattr(self, private)

        return property(getter, setter, deleter, doc=doc)

    gt_instances = _instances_property('gt_instances', 'Ground-truth boxes and labels.')
    ignored_instances = _instances_property('ignored_instances', 'Boxes to ignore (iscrowd).')
    pred_instances = _instances_property('pred_instances', 'Detections: bboxes, scores, labels.')
    del _instances_property


SampleList = list[DetDataSample]
OptSampleList = SampleList | None
