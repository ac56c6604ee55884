"""DetInferencer: images in, drawn predictions and JSON files out (the demo's engine)."""
from __future__ import annotations

import glob
import json
import os.path as osp
from collections.abc import Sequence
from pathlib import Path

import cv2
import mmcv
import numpy as np
from mmengine.config import Config

from codetr.registry import INFERENCERS
from codetr.structures import DetDataSample
from codetr.structures.mask import encode_masks
from codetr.utils.progress import Progress
from codetr.visualization.draw import draw_instances

from .inference import ImageInput, build_test_pipeline, init_detector, run_batch

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def expand_inputs(inputs: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    """Paths to files, folders (their images, sorted) or glob patterns, and arrays, as a flat
    list of image files and arrays.

    Raises:
        FileNotFoundError: a path that is neither a file, a folder nor a matching pattern.
    """
    items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    expanded: list[ImageInput] = []
    for item in items:
        if isinstance(item, np.ndarray):
            expanded.append(item)
            continue
        path = str(item)
        if osp.isdir(path):
            found = sorted(str(p) for p in Path(path).iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES)
        elif osp.isfile(path):
            found = [path]
        else:
            found = sorted(glob.glob(path))
        if not found:
            raise FileNotFoundError(f'no image found at {path!r}: give an image file, a folder '
                                    'of images or a glob pattern such as "imgs/*.jpg"')
        expanded.extend(found)
    return expanded


@INFERENCERS.register_module()
class DetInferencer:
    """Run a detector over images and write what it finds.

    Args:
        model: a config file, a short config name or a ``Config``.
        weights: its checkpoint (class names come from its ``meta['dataset_meta']``).
        device: e.g. ``'cpu'`` or ``'cuda:0'``.
        cfg_options: config overrides.
        show_progress: report the images done when a call has more than one
            (:mod:`codetr.utils.progress`).
    """

    def __init__(self, model: str | Path | Config, weights: str | None = None,
                 device: str = 'cpu', cfg_options: dict | None = None,
                 show_progress: bool = True) -> None:
        self.show_progress = show_progress
        self.model = init_detector(model, weights, device=device, cfg_options=cfg_options)
        meta = self.model.dataset_meta or {}
        self.classes = tuple(meta.get('classes', ()))
        self._pipelines = {
            from_array: build_test_pipeline(self.model.cfg, from_array)
            for from_array in (False, True)}

    def __call__(self, inputs: ImageInput | Sequence[ImageInput], out_dir: str | None = None,
                 pred_score_thr: float = 0.3, batch_size: int = 1, no_save_vis: bool = False,
                 no_save_pred: bool = False) -> dict[str, list]:
        """Predict on ``inputs`` (a path, folder, glob, BGR array or a list of them).

        Writes ``out_dir/vis/<stem>.png`` (predictions with score >= ``pred_score_thr``
        drawn on the image) and ``out_dir/preds/<stem>.json`` (every prediction: ``bboxes``
        xyxy original pixels, ``scores``, ``labels``, ``label_names``, and ``masks`` as COCO
        RLEs for a mask model) unless disabled or
        ``out_dir`` is None; arrays are named by their position, ``00000000``.

        Returns:
            ``dict(predictions=[per-image dict as in the JSON], visualization=[BGR arrays])``.
        """
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        images = expand_inputs(inputs)
        predictions, drawings = [], []
        progress = Progress(len(images), 'infer', unit='images',
                            enabled=None if self.show_progress and len(images) > 1 else False)
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            for offset, sample in enumerate(self._predict(batch)):
                image, index = batch[offset], start + offset
                stem = f'{index:08d}' if isinstance(image, np.ndarray) else Path(image).stem
                pred = self.to_dict(sample)
                drawing = self.draw(image, sample, pred_score_thr)
                predictions.append(pred)
                drawings.append(drawing)
                if out_dir is not None:
                    self._write(out_dir, stem, pred, drawing, no_save_vis, no_save_pred)
            progress.update(len(batch))
        progress.close()
        return dict(predictions=predictions, visualization=drawings)

    def _predict(self, batch: list[ImageInput]) -> list[DetDataSample]:
        """Arrays and paths use different loaders, so a mixed batch runs as two."""
        results: dict[int, DetDataSample] = {}
        for from_array in (False, True):
            picked = [i for i, img in enumerate(batch)
                      if isinstance(img, np.ndarray) == from_array]
            if picked:
                samples = run_batch(self.model, self._pipelines[from_array],
                                    [batch[i] for i in picked])
                results.update(zip(picked, samples))
        return [results[i] for i in range(len(batch))]

    def class_name(self, label: int) -> str:
        """The checkpoint's (or config's) name of ``label``; its index if there is none."""
        return self.classes[label] if label < len(self.classes) else str(label)

    def to_dict(self, sample: DetDataSample) -> dict[str, list]:
        """JSON-ready predictions of one image."""
        pred = sample.pred_instances
        labels = [int(v) for v in pred.labels.tolist()]
        out = dict(bboxes=[[float(v) for v in box] for box in pred.bboxes.tolist()],
                   scores=[float(v) for v in pred.scores.tolist()], labels=labels,
                   label_names=[self.class_name(v) for v in labels])
        if 'masks' in pred:  # instance segmentation: one COCO RLE per detection
            out['masks'] = encode_masks(pred.masks.cpu().numpy())
        return out

    def draw(self, image: ImageInput, sample: DetDataSample, score_thr: float) -> np.ndarray:
        """The BGR image with the predictions scoring >= ``score_thr`` (and their masks, if
        any) drawn on it."""
        img = image if isinstance(image, np.ndarray) else mmcv.imread(str(image))
        pred = sample.pred_instances[sample.pred_instances.scores >= score_thr]
        top = int(pred.labels.max()) + 1 if len(pred) else 0
        names = [self.class_name(i) for i in range(max(len(self.classes), top))]
        return draw_instances(img, pred, names, scores=pred.scores)

    @staticmethod
    def _write(out_dir: str, stem: str, pred: dict, drawing: np.ndarray, no_save_vis: bool,
               no_save_pred: bool) -> None:
        if not no_save_vis:
            vis_dir = Path(out_dir, 'vis')
            vis_dir.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(vis_dir / f'{stem}.png'), drawing):
                raise OSError(f'could not write {vis_dir / f"{stem}.png"}')
        if not no_save_pred:
            pred_dir = Path(out_dir, 'preds')
            pred_dir.mkdir(parents=True, exist_ok=True)
            (pred_dir / f'{stem}.json').write_text(json.dumps(pred, indent=2))
