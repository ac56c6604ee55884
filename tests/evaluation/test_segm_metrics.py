"""Mask AP ('segm') of CocoMetric and LVISMetric: ground truth scores 1.0, a hand-made case
scores its hand-computed AP, masks are RLE-encoded as they arrive."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from codetr.evaluation import CocoMetric, LVISMetric
from codetr.structures.mask import polygons_to_mask

H, W = 60, 80
A, B = [0, 0, 10, 10], [20, 20, 30, 30]  # two small GT squares of category 1 ('a')
SEGM_KEYS = ['segm_mAP', 'segm_mAP_50', 'segm_mAP_75', 'segm_mAP_s', 'segm_mAP_m', 'segm_mAP_l']


def square(x1, y1, x2, y2) -> list[list[float]]:
    return [[x1, y1, x2, y1, x2, y2, x1, y2]]


def gt_json(tmp_path, lvis: bool = False) -> str:
    anns = [dict(id=i + 1, image_id=1, category_id=1, bbox=[x1, y1, x2 - x1, y2 - y1],
                 area=(x2 - x1) * (y2 - y1), iscrowd=0, segmentation=square(*box))
            for i, box in enumerate([A, B]) for x1, y1, x2, y2 in [box]]
    image = dict(id=1, width=W, height=H, file_name='1.jpg')
    cats = [dict(id=1, name='a'), dict(id=2, name='b')]
    if lvis:
        image.update(neg_category_ids=[], not_exhaustive_category_ids=[])
        for cat in cats:
            cat['frequency'] = 'f'
    path = tmp_path / 'gt.json'
    path.write_text(json.dumps(dict(images=[image], annotations=anns, categories=cats)))
    return str(path)


def rect_mask(x1, y1, x2, y2) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y1:y2, x1:x2] = True
    return m


def prediction(boxes, masks, scores, labels, img_id: int = 1) -> dict:
    return dict(img_id=img_id, ori_shape=(H, W), pred_instances=dict(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        scores=torch.tensor(scores, dtype=torch.float32),
        labels=torch.tensor(labels, dtype=torch.long),
        masks=torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, H, W, dtype=bool)))


def evaluate(metric, samples) -> dict:
    metric.dataset_meta = dict(classes=('a', 'b'))
    metric.process({}, samples)
    return metric.evaluate(len(samples))


# Ranked: TP (exact, .9), FP (.8), and a detection of B whose box is exact but whose mask
# covers only 8 of its 10 rows (mask IoU 0.8, .7). Box AP counts both as exact; mask AP has
# recall .5 -> 1 at IoU <= .8 and only the first TP above (as in test_coco_metric).
HAND = dict(boxes=[A, [50, 40, 60, 50], B],
            masks=[rect_mask(*A), rect_mask(50, 40, 60, 50), rect_mask(20, 20, 30, 28)],
            scores=[0.9, 0.8, 0.7], labels=[0, 0, 0])
AP_BOTH = (51 + 50 * 2 / 3) / 101  # precision 1 up to recall .5, then 2/3
AP_ONE = 51 / 101
SEGM_MAP = (7 * AP_BOTH + 3 * AP_ONE) / 10  # IoU thresholds .50 ... .80 are 7 of 10


@pytest.mark.parametrize('backend', ['pycocotools', 'faster_coco_eval'])
def test_coco_ground_truth_masks_score_one(tmp_path, backend):
    masks = [polygons_to_mask(square(*A), H, W), polygons_to_mask(square(*B), H, W)]
    res = evaluate(CocoMetric(ann_file=gt_json(tmp_path), metric=['bbox', 'segm'],
                              backend=backend),
                   [prediction([A, B], [m.astype(bool) for m in masks], [0.9, 0.8], [0, 0])])
    for key in ('bbox_mAP', 'segm_mAP', 'segm_mAP_50', 'segm_mAP_75', 'segm_mAP_s'):
        assert res[f'coco/{key}'] == pytest.approx(1.0), key
    assert res['coco/segm_mAP_m'] == -1  # no medium GT


@pytest.mark.parametrize('backend', ['pycocotools', 'faster_coco_eval'])
def test_coco_hand_made_mask_ap(tmp_path, backend):
    res = evaluate(CocoMetric(ann_file=gt_json(tmp_path), metric=['bbox', 'segm'],
                              backend=backend), [prediction(**HAND)])
    assert res['coco/bbox_mAP'] == pytest.approx(AP_BOTH, abs=1e-9)  # boxes are exact
    assert res['coco/segm_mAP_50'] == pytest.approx(AP_BOTH, abs=1e-9)
    assert res['coco/segm_mAP_75'] == pytest.approx(AP_BOTH, abs=1e-9)
    assert res['coco/segm_mAP'] == pytest.approx(SEGM_MAP, abs=1e-9)
    assert set(SEGM_KEYS) <= {k.split('/')[1] for k in res}


def test_masks_are_encoded_as_they_arrive_and_written(tmp_path):
    metric = CocoMetric(ann_file=gt_json(tmp_path), metric='segm',
                        outfile_prefix=str(tmp_path / 'out'))
    metric.dataset_meta = dict(classes=('a', 'b'))
    metric.process({}, [prediction(**HAND)])
    pred, _ = metric.results[0]
    assert len(pred['masks']) == 3 and isinstance(pred['masks'][0]['counts'], str)
    metric.evaluate(1)
    saved = json.loads((tmp_path / 'out.segm.json').read_text())
    assert len(saved) == 3 and {'segmentation', 'bbox', 'score'} <= set(saved[0])


def test_segm_without_ann_file_reads_instance_masks():
    instances = [dict(bbox=box, bbox_label=0, mask=square(*box)) for box in (A, B)]
    sample = prediction(**HAND)
    sample['instances'] = instances
    res = evaluate(CocoMetric(metric='segm'), [sample])
    assert res['coco/segm_mAP'] == pytest.approx(SEGM_MAP, abs=1e-9)


def test_segm_errors_say_what_to_fix(tmp_path):
    no_masks = prediction(**HAND)
    del no_masks['pred_instances']['masks']
    with pytest.raises(ValueError, match='needs a mask for every detection'):
        evaluate(CocoMetric(ann_file=gt_json(tmp_path), metric='segm'), [no_masks])
    gt = json.loads(open(gt_json(tmp_path)).read())
    for ann in gt['annotations']:
        del ann['segmentation']
    (tmp_path / 'boxes.json').write_text(json.dumps(gt))
    with pytest.raises(ValueError, match='Evaluate "bbox" only'):
        evaluate(CocoMetric(ann_file=str(tmp_path / 'boxes.json'), metric='segm'),
                 [prediction(**HAND)])


def test_lvis_segm_ground_truth_and_hand_made_case(tmp_path):
    ann = gt_json(tmp_path, lvis=True)
    masks = [rect_mask(*A), rect_mask(*B)]
    res = evaluate(LVISMetric(ann_file=ann, metric=['bbox', 'segm']),
                   [prediction([A, B], masks, [0.9, 0.8], [0, 0])])
    assert res['lvis/segm_AP'] == pytest.approx(1.0) and res['lvis/bbox_AP'] == pytest.approx(1.0)
    res = evaluate(LVISMetric(ann_file=ann, metric=['bbox', 'segm']), [prediction(**HAND)])
    assert res['lvis/bbox_AP'] == pytest.approx(AP_BOTH, abs=1e-9)
    assert res['lvis/segm_AP50'] == pytest.approx(AP_BOTH, abs=1e-9)
    assert res['lvis/segm_AP'] == pytest.approx(SEGM_MAP, abs=1e-9)
    assert res['lvis/segm_APf'] == pytest.approx(SEGM_MAP, abs=1e-9)


def test_lvis_encodes_only_the_top_max_dets_masks(tmp_path):
    metric = LVISMetric(ann_file=gt_json(tmp_path, lvis=True), metric='segm', max_dets=2)
    metric.dataset_meta = dict(classes=('a', 'b'))
    metric.process({}, [prediction(**HAND)])
    kept = metric.results[0]
    assert kept['scores'].tolist() == pytest.approx([0.9, 0.8]) and len(kept['masks']) == 2
