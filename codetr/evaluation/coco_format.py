"""Conversions between the metric's per-image dicts and COCO-format json structures.

Shared by ``CocoMetric`` and ``LVISMetric``. Boxes arrive as ``xyxy`` in original image
pixels; COCO json stores ``[x, y, w, h]`` in the same pixels. Predicted masks arrive as
``(K, H, W)`` bool at the original image size and are RLE-encoded as soon as a batch
reaches the metric (:func:`unpack_prediction`), so no metric holds dense masks.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from codetr.structures.mask import encode_masks


def to_numpy(value: Any) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def xyxy_to_xywh(bboxes: np.ndarray) -> np.ndarray:
    """``(K, 4)`` xyxy -> ``(K, 4)`` COCO xywh, same pixel units."""
    bboxes = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([bboxes[:, :2], bboxes[:, 2:] - bboxes[:, :2]], axis=1)


def dataset_classes(dataset_meta: dict | None) -> tuple[str, ...]:
    """``dataset_meta['classes']``, which the Runner copies from the evaluated dataset."""
    if not dataset_meta or 'classes' not in dataset_meta:
        raise KeyError('The metric has no dataset_meta["classes"]; the Runner sets it from the '
                       'dataset\'s metainfo. Outside a Runner, set metric.dataset_meta = '
                       'dict(classes=(...)) first.')
    return tuple(dataset_meta['classes'])


def check_img_ids(img_ids: Sequence, known_ids: Sequence, ann_file: str | None) -> None:
    """Raise if a predicted image is not in the ground truth (wrong ann_file or split)."""
    unknown = set(img_ids) - set(known_ids)
    if unknown:
        raise ValueError(f'Predictions for image ids {sorted(unknown)[:10]} that are not in '
                         f'{ann_file or "the ground truth"}; the metric\'s ann_file must be '
                         f'the one of the evaluated dataset.')


def label_to_cat_ids(classes: Sequence[str], categories: Sequence[dict],
                     ann_file: str | None = None) -> list[int]:
    """Category id of each class, matched BY NAME: ``result[i]`` is the id of ``classes[i]``.

    The datasets map category ids to label indices the same way, so a label index from the
    model always names the category the dataset took it from, whatever the id order.
    """
    name_to_id = {cat['name']: cat['id'] for cat in categories}
    missing = [name for name in classes if name not in name_to_id]
    if missing:
        source = f' of {ann_file}' if ann_file else ''
        raise ValueError(
            f'Classes {missing[:10]} (dataset_meta["classes"]) are not category names in the '
            f'annotations{source}. Make `metainfo.classes` in the dataset config match the '
            f'`categories[*].name` of the annotation file.')
    return [name_to_id[name] for name in classes]


def preds_to_coco_json(results: Sequence[dict], cat_ids: Sequence[int],
                       segm: bool = False) -> list[dict]:
    """Per-image prediction dicts -> COCO result list.

    Each result has ``img_id`` and ``bboxes (K, 4)`` xyxy, ``scores (K,)``, ``labels (K,)``
    label indices (and, for ``segm``, ``masks``: K COCO RLEs, which each entry then carries
    as ``segmentation`` next to its box, as MMDetection writes them). Raises if a label is
    not an index into ``cat_ids``.
    """
    json_results = []
    for res in results:
        labels = res['labels'].astype(np.int64)
        bad = labels[(labels < 0) | (labels >= len(cat_ids))]
        if bad.size:
            raise ValueError(
                f'Image {res["img_id"]}: predicted labels {sorted(set(bad.tolist()))[:10]} are '
                f'outside the {len(cat_ids)} classes of dataset_meta["classes"]. The model\'s '
                f'num_classes must equal the number of classes in the dataset config.')
        boxes = xyxy_to_xywh(res['bboxes'])
        masks = res.get('masks') if segm else None
        if segm and (masks is None or len(masks) != len(boxes)):
            raise ValueError(f'Image {res["img_id"]}: the "segm" metric needs a mask for every '
                             f'detection (pred_instances.masks); the model predicts none. Use a '
                             f'mask head and test_cfg.mask_branch, or evaluate "bbox" only.')
        for k, (box, score, label) in enumerate(zip(boxes, res['scores'], labels)):
            entry = dict(image_id=res['img_id'], bbox=[float(v) for v in box],
                         score=float(score), category_id=int(cat_ids[label]))
            if segm:
                entry['segmentation'] = masks[k]
            json_results.append(entry)
    return json_results


def gt_to_coco_dict(gts: Sequence[dict], classes: Sequence[str]) -> dict:
    """Build a COCO ground-truth dict from data samples' raw ``instances``.

    Used when a metric has no ``ann_file``. Category ids are the label indices (so label
    ``i`` <-> id ``i``); images get ``file_name = '<img_id>.jpg'``. Each gt dict has
    ``img_id``, ``width``, ``height`` and ``anns``: the dataset's ``instances``, each with
    ``bbox`` xyxy in original pixels, ``bbox_label``, optionally ``ignore_flag`` (stored
    as ``iscrowd`` so COCOeval ignores it) and ``mask`` (stored as ``segmentation``).
    """
    categories = [dict(id=i, name=name) for i, name in enumerate(classes)]
    images, annotations = [], []
    for gt in gts:
        images.append(dict(id=gt['img_id'], width=int(gt['width']), height=int(gt['height']),
                           file_name=f'{gt["img_id"]}.jpg'))
        for ann in gt['anns']:
            x1, y1, x2, y2 = (float(v) for v in ann['bbox'])
            w, h = x2 - x1, y2 - y1
            annotations.append(dict(
                id=len(annotations) + 1,  # COCOeval treats id 0 as "unmatched"
                image_id=gt['img_id'], bbox=[x1, y1, w, h], area=w * h,
                category_id=int(ann['bbox_label']), iscrowd=int(ann.get('ignore_flag', 0))))
            if 'mask' in ann:
                annotations[-1]['segmentation'] = ann['mask']
    return dict(info={}, licenses=[], images=images, annotations=annotations,
                categories=categories)


def unpack_prediction(data_sample: dict, with_masks: bool = False,
                      top_k: int | None = None) -> dict:
    """One evaluator data-sample dict -> ``img_id`` plus numpy ``bboxes, scores, labels``,
    and with ``with_masks`` the RLEs of ``pred_instances.masks`` as ``masks`` (if any).

    ``top_k`` keeps only the best-scoring ``top_k`` detections (before any mask is encoded).
    """
    if 'pred_instances' not in data_sample:
        raise KeyError('The data sample has no `pred_instances`; the model\'s predict() must '
                       'fill them before the metric sees the batch.')
    pred = data_sample['pred_instances']
    out = dict(img_id=data_sample['img_id'],
               bboxes=to_numpy(pred['bboxes']).reshape(-1, 4),
               scores=to_numpy(pred['scores']).reshape(-1),
               labels=to_numpy(pred['labels']).reshape(-1))
    keep = None
    if top_k is not None and len(out['scores']) > top_k:
        keep = np.sort(np.argsort(-out['scores'], kind='stable')[:top_k])
        out.update({k: out[k][keep] for k in ('bboxes', 'scores', 'labels')})
    if with_masks and 'masks' in pred:
        masks = to_numpy(pred['masks'])  # shares a CPU tensor's memory: no copy
        out['masks'] = encode_masks(masks if keep is None else masks[keep])
    return out
