"""Detection confusion matrix with a background row and column, MMDetection's rules.

Rows are ground-truth classes, columns predicted classes; index ``C`` (the last) is
background. For each image, detections scoring >= ``score_thr`` (optionally after per-class
NMS at ``nms_iou_thr``) are matched to every ground-truth box they overlap with
IoU >= ``tp_iou_thr``:

- each such pair adds 1 at ``[gt class, predicted class]`` (the diagonal when the classes
  agree, which makes that ground truth found);
- a detection that overlaps no ground-truth box adds 1 at ``[background, predicted class]``
  (a false positive);
- a ground-truth box that no detection of its own class found adds 1 at
  ``[gt class, background]`` (a false negative).

Ignored (crowd) ground-truth boxes are left out, as COCO evaluation leaves them out: they
are never missed, and a detection that overlaps only them counts nowhere.
"""
from __future__ import annotations

import csv
import json
import os.path as osp
from collections.abc import Sequence

import numpy as np
import torch
from mmengine.utils import track_iter_progress
from torchvision.ops import batched_nms

from .common import box_iou, gt_arrays


def _kept_detections(pred: dict, score_thr: float,
                     nms_iou_thr: float | None) -> tuple[np.ndarray, np.ndarray]:
    """``(bboxes (K, 4), labels (K,))`` scoring >= ``score_thr``, after per-class NMS."""
    keep = pred['scores'] >= score_thr
    bboxes, scores, labels = pred['bboxes'][keep], pred['scores'][keep], pred['labels'][keep]
    if nms_iou_thr is not None and len(bboxes):
        kept = batched_nms(torch.from_numpy(bboxes).float(), torch.from_numpy(scores).float(),
                           torch.from_numpy(labels), float(nms_iou_thr)).numpy()
        bboxes, labels = bboxes[kept], labels[kept]
    return bboxes, labels


def accumulate_image(matrix: np.ndarray, gt: tuple[np.ndarray, np.ndarray, np.ndarray],
                     pred: dict, score_thr: float = 0.3, tp_iou_thr: float = 0.5,
                     nms_iou_thr: float | None = None) -> None:
    """Add one image's counts to ``matrix`` ``(C + 1, C + 1)`` in place.

    Args:
        gt: ``gt_arrays`` of the image: bboxes (N, 4) xyxy, labels (N,), ignore (N,).
        pred: ``dict(bboxes (K, 4) xyxy, scores (K,), labels (K,))`` in the same pixels.
    """
    background = matrix.shape[0] - 1
    gt_boxes, gt_labels, gt_ignore = gt
    det_boxes, det_labels = _kept_detections(pred, score_thr, nms_iou_thr)
    ious = box_iou(det_boxes, gt_boxes) >= tp_iou_thr  # (K, N) matches
    found = np.zeros(len(gt_boxes), dtype=bool)
    for det, det_label in enumerate(det_labels):
        matched = np.nonzero(ious[det] & ~gt_ignore)[0]
        for j in matched:
            matrix[gt_labels[j], det_label] += 1
            found[j] |= gt_labels[j] == det_label
        if matched.size == 0 and not (ious[det] & gt_ignore).any():
            matrix[background, det_label] += 1
    for j in np.nonzero(~found & ~gt_ignore)[0]:
        matrix[gt_labels[j], background] += 1


def confusion_matrix(records: Sequence[dict], infos: dict, num_classes: int,
                     score_thr: float = 0.3, tp_iou_thr: float = 0.5,
                     nms_iou_thr: float | None = None, progress: bool = True) -> np.ndarray:
    """``(C + 1, C + 1)`` int64 counts over all images of ``records`` (``load_det_results``)
    with their ground truth ``infos`` (``{img_id: data_info}``)."""
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    items = track_iter_progress(list(records)) if progress and records else records
    for record in items:
        accumulate_image(matrix, gt_arrays(infos[record['img_id']]), record['pred_instances'],
                         score_thr, tp_iou_thr, nms_iou_thr)
    return matrix


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row as percentages of its sum (rows without counts stay 0)."""
    sums = matrix.sum(axis=1, keepdims=True)
    return np.where(sums > 0, matrix / np.maximum(sums, 1) * 100.0, 0.0)


def save_confusion_matrix(matrix: np.ndarray, classes: Sequence[str], out_dir: str,
                          settings: dict, cmap: str = 'plasma') -> dict[str, str]:
    """Write ``confusion_matrix.{png,json,csv}`` into ``out_dir``; returns the paths."""
    names = list(classes) + ['background']
    paths = {ext: osp.join(out_dir, f'confusion_matrix.{ext}') for ext in ('png', 'json', 'csv')}
    with open(paths['json'], 'w') as f:
        json.dump(dict(classes=names, rows='ground truth', columns='prediction',
                       counts=matrix.tolist(),
                       row_percent=np.round(row_normalised(matrix), 4).tolist(), **settings),
                  f, indent=1)
    with open(paths['csv'], 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['ground truth \\ prediction'] + names)
        writer.writerows([name] + row for name, row in zip(names, matrix.tolist()))
    plot_confusion_matrix(matrix, names, paths['png'], cmap)
    return paths


def plot_confusion_matrix(matrix: np.ndarray, names: Sequence[str], path: str,
                          cmap: str = 'plasma') -> None:
    """Row-normalised matrix (percent of each ground-truth row) as a PNG heat map."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    percent = row_normalised(matrix)
    size = max(6.0, 0.5 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9), dpi=120)
    image = ax.imshow(percent, cmap=cmap, vmin=0, vmax=100)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label='% of the ground-truth row')
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, names, rotation=45, ha='right')
    ax.set_yticks(ticks, names)
    ax.set_xlabel('prediction')
    ax.set_ylabel('ground truth')
    ax.set_title('Normalised confusion matrix')
    if len(names) <= 40:  # cell labels are unreadable beyond that
        for (i, j), value in np.ndenumerate(percent):
            if matrix[i, j]:
                ax.text(j, i, f'{value:.0f}', ha='center', va='center', fontsize=7,
                        color='white' if value < 50 else 'black')
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
