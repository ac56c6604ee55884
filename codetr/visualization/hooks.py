"""``DetVisualizationHook``: draws predictions during validation and for ``test.py --show-dir``."""
from __future__ import annotations

import os
import os.path as osp
from collections.abc import Sequence

import mmcv
import numpy as np
from mmengine.fileio import get
from mmengine.hooks import Hook
from mmengine.visualization import Visualizer

from codetr.registry import HOOKS
from codetr.structures import DetDataSample


@HOOKS.register_module()
class DetVisualizationHook(Hook):
    """Hand images and their predictions to the Runner's visualizer.

    Args:
        draw: do anything at all (``tools/test.py --show-dir`` turns it on).
        interval: during validation, draw the first image of every ``interval``-th batch.
        score_thr: predictions scoring at or below this are not drawn.
        show: also open a window per image.
        wait_time: seconds a shown window stays open.
        test_out_dir: in testing, write every image as ``<work_dir>/<timestamp>/
            <test_out_dir>/<image name>.png`` (an absolute path is used as is).
        backend_args: mmengine file backend arguments for reading the images.
    """

    priority = 'NORMAL'

    def __init__(self, draw: bool = False, interval: int = 50, score_thr: float = 0.3,
                 show: bool = False, wait_time: float = 0.0, test_out_dir: str | None = None,
                 backend_args: dict | None = None) -> None:
        if interval < 1:
            raise ValueError(f'interval={interval} must be >= 1.')
        self.draw = draw
        self.interval = interval
        self.score_thr = score_thr
        self.show = show
        self.wait_time = wait_time
        self.test_out_dir = test_out_dir
        self.backend_args = backend_args
        self._test_index = 0
        self._out_dir: str | None = None

    def _read_rgb(self, img_path: str) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB original image."""
        return mmcv.imfrombytes(get(img_path, backend_args=self.backend_args),
                                channel_order='rgb')

    def after_val_iter(self, runner, batch_idx: int, data_batch: dict,
                       outputs: Sequence[DetDataSample]) -> None:
        if not self.draw:
            return
        step = runner.iter + batch_idx
        if step % self.interval != 0:
            return
        sample = outputs[0]
        self._visualizer().add_datasample(
            osp.basename(sample.img_path) + '_val', self._read_rgb(sample.img_path),
            data_sample=sample, show=self.show, wait_time=self.wait_time,
            pred_score_thr=self.score_thr, step=step)

    def before_test_epoch(self, runner) -> None:
        if self.draw and self.test_out_dir is not None:
            self._out_dir = osp.join(runner.work_dir, runner.timestamp, self.test_out_dir)
            os.makedirs(self._out_dir, exist_ok=True)

    def after_test_iter(self, runner, batch_idx: int, data_batch: dict,
                        outputs: Sequence[DetDataSample]) -> None:
        if not self.draw:
            return
        for sample in outputs:
            self._test_index += 1
            out_file = None
            if self._out_dir is not None:
                stem = osp.splitext(osp.basename(sample.img_path))[0]
                out_file = osp.join(self._out_dir, stem + '.png')
            self._visualizer().add_datasample(
                'test_img', self._read_rgb(sample.img_path), data_sample=sample,
                show=self.show, wait_time=self.wait_time, pred_score_thr=self.score_thr,
                out_file=out_file, step=self._test_index)

    @staticmethod
    def _visualizer() -> Visualizer:
        return Visualizer.get_current_instance()
