"""Small helpers shared by the analysis tools: ground-truth arrays, IoU, matched inputs."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mmengine.config import Config

from codetr.evaluation.offline import build_split_dataset, check_prediction_ids, data_infos_by_id


def gt_arrays(info: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(bboxes (N, 4) xyxy, labels (N,), ignore (N,) bool)`` of a dataset data_info."""
    instances = info.get('instances', [])
    bboxes = np.asarray([inst['bbox'] for inst in instances], dtype=np.float64).reshape(-1, 4)
    labels = np.asarray([inst['bbox_label'] for inst in instances], dtype=np.int64)
    ignore = np.asarray([bool(inst.get('ignore_flag', 0)) for inst in instances], dtype=bool)
    return bboxes, labels, ignore


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: ``(N, 4)``, ``(M, 4)`` -> ``(N, M)``; 0 for empty boxes."""
    b1, b2 = boxes1[:, None, :], boxes2[None, :, :]
    wh = np.clip(np.minimum(b1[..., 2:], b2[..., 2:]) - np.maximum(b1[..., :2], b2[..., :2]),
                 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    union = area1[:, None] + area2[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def predictions_with_ground_truth(cfg: Config, records: Sequence[dict], source: str,
                                  split: str = 'test') -> tuple[list[dict], dict, tuple]:
    """``(records, {img_id: data_info}, classes)``: the records checked against the config's
    ``<split>`` dataset (built without its pipeline), which gives the ground truth."""
    dataset = build_split_dataset(cfg, split)
    infos = data_infos_by_id(dataset)
    check_prediction_ids(records, infos, source)
    classes = tuple(dataset.metainfo['classes'])
    labels = np.concatenate([r['pred_instances']['labels'] for r in records] or [[]])
    bad = labels[(labels < 0) | (labels >= len(classes))]
    if bad.size:
        raise ValueError(f'{source}: predicted labels {sorted(set(bad.tolist()))[:10]} are '
                         f'outside the {len(classes)} classes of the config\'s dataset.')
    return list(records), infos, classes


def draw_gt_and_predictions(img_bgr: np.ndarray, info: dict, pred: dict,
                            classes: Sequence[str], score_thr: float = 0.3,
                            title: str = '') -> np.ndarray:
    """``(H, 2 W + 8, 3)`` BGR: ground truth on the left, predictions scoring >= score_thr on
    the right (ignored ground truth is not drawn); ``title`` is written on the left half."""
    import cv2

    from codetr.visualization import draw_boxes

    bboxes, labels, ignore = gt_arrays(info)
    left = draw_boxes(img_bgr, bboxes[~ignore], labels[~ignore], classes)
    keep = pred['scores'] >= score_thr
    right = draw_boxes(img_bgr, pred['bboxes'][keep], pred['labels'][keep], classes,
                       pred['scores'][keep])
    if title:
        cv2.putText(left, title, (4, left.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
    gap = np.full((left.shape[0], 8, 3), 255, dtype=np.uint8)
    return np.concatenate([left, gap, right], axis=1)
