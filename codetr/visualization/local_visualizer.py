"""``DetLocalVisualizer``: ground truth and predictions drawn side by side on an image."""
from __future__ import annotations

import os
import os.path as osp

import cv2
import numpy as np
from mmengine.visualization import Visualizer

from codetr.registry import VISUALIZERS
from codetr.structures import DetDataSample

from .draw import draw_instances


@VISUALIZERS.register_module()
class DetLocalVisualizer(Visualizer):
    """Draws GT (left) and predictions above a score threshold (right) with class names, and
    the instance masks when the samples have them (``gt_instances.masks``,
    ``pred_instances.masks``).

    Images follow mmengine's convention: ``(H, W, 3)`` uint8 **RGB**. Class names come
    from ``dataset_meta['classes']``, which the Runner's loops set from the dataset.
    Boxes are drawn as they are: predictions are in original pixels, and so are the GT
    boxes of the shipped val/test pipelines, which load annotations after ``Resize``.
    """

    def __init__(self, name: str = 'visualizer', image: np.ndarray | None = None,
                 vis_backends: list | dict | None = None, save_dir: str | None = None,
                 line_width: int = 2) -> None:
        super().__init__(name=name, image=image, vis_backends=vis_backends, save_dir=save_dir)
        self.line_width = line_width

    def _classes(self) -> list[str]:
        meta = self.dataset_meta or {}
        if 'classes' not in meta:
            raise KeyError('DetLocalVisualizer.dataset_meta has no "classes"; set it to the '
                           'dataset\'s metainfo before drawing.')
        return list(meta['classes'])

    def draw_sample(self, image: np.ndarray, data_sample: DetDataSample | None,
                    draw_gt: bool = True, draw_pred: bool = True,
                    pred_score_thr: float = 0.3) -> np.ndarray:
        """The RGB image with GT and/or predictions drawn, concatenated left to right."""
        classes = self._classes()
        bgr = np.ascontiguousarray(image[..., ::-1])
        panels = []
        if draw_gt and data_sample is not None and 'gt_instances' in data_sample:
            panels.append(draw_instances(bgr, data_sample.gt_instances, classes,
                                         thickness=self.line_width))
        if draw_pred and data_sample is not None and 'pred_instances' in data_sample:
            pred = data_sample.pred_instances
            pred = pred[pred.scores > pred_score_thr]
            panels.append(draw_instances(bgr, pred, classes, scores=pred.scores,
                                         thickness=self.line_width))
        drawn = np.concatenate(panels, axis=1) if panels else bgr
        return np.ascontiguousarray(drawn[..., ::-1])

    def add_datasample(self, name: str, image: np.ndarray,
                       data_sample: DetDataSample | None = None, draw_gt: bool = True,
                       draw_pred: bool = True, show: bool = False, wait_time: float = 0,
                       out_file: str | None = None, pred_score_thr: float = 0.3,
                       step: int = 0) -> None:
        """Draw a sample; write it to ``out_file`` (PNG/JPEG by suffix), else to the backends.

        Args:
            name: image name for the vis backends.
            image: ``(H, W, 3)`` uint8 RGB.
            data_sample: a ``DetDataSample`` with ``gt_instances`` and/or ``pred_instances``.
            pred_score_thr: predictions scoring at or below this are not drawn.
        """
        drawn = self.draw_sample(image, data_sample, draw_gt, draw_pred, pred_score_thr)
        self.set_image(drawn)
        if show:
            self.show(drawn, win_name=name, wait_time=wait_time)
        if out_file is not None:
            os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
            if not cv2.imwrite(out_file, drawn[..., ::-1]):
                raise OSError(f'Could not write {out_file}; check the directory and suffix.')
        else:
            self.add_image(name, drawn, step)
