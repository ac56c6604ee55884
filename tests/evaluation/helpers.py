"""Small COCO-style fixtures for the metric tests."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def coco_dict(boxes_per_image: dict[int, list[tuple[list[float], int]]],
              categories: list[tuple[int, str]], size: tuple[int, int] = (200, 300)) -> dict:
    """A COCO gt dict: ``{img_id: [(xyxy, category_id), ...]}``; area = box w * h."""
    height, width = size
    images = [dict(id=i, width=width, height=height, file_name=f'{i}.jpg')
              for i in boxes_per_image]
    annotations = []
    for img_id, anns in boxes_per_image.items():
        for (x1, y1, x2, y2), cat in anns:
            annotations.append(dict(id=len(annotations) + 1, image_id=img_id, category_id=cat,
                                    bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1),
                                    iscrowd=0))
    return dict(images=images, annotations=annotations,
                categories=[dict(id=i, name=n) for i, n in categories])


def write_json(obj: dict, path: Path) -> str:
    path.write_text(json.dumps(obj))
    return str(path)


def sample(img_id: int, bboxes: list, scores: list, labels: list,
           ori_shape: tuple[int, int] = (200, 300), **extra) -> dict:
    """One evaluator data-sample dict with tensor ``pred_instances``."""
    return dict(img_id=img_id, ori_shape=ori_shape, **extra,
                pred_instances=dict(bboxes=torch.tensor(bboxes, dtype=torch.float32).reshape(-1, 4),
                                    scores=torch.tensor(scores, dtype=torch.float32),
                                    labels=torch.tensor(labels, dtype=torch.long)))
