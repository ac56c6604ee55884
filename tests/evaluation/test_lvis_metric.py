"""LVIS federated evaluation on small hand-computed cases."""
from __future__ import annotations

import json

import pytest

from codetr.evaluation import LVISFederatedEval, LVISMetric
from codetr.registry import METRICS

from .helpers import sample

CATS = [(1, 'apple', 'r'), (2, 'bus', 'c'), (3, 'cat', 'f')]
A = [0, 0, 10, 10]
B = [20, 20, 40, 40]
C = [50, 50, 90, 90]


def lvis_gt(images: dict[int, dict], cats=CATS) -> dict:
    """``images``: ``{img_id: dict(gts=[(xyxy, cat)], neg=[...], not_exhaustive=[...])}``."""
    gt = dict(images=[], annotations=[],
              categories=[dict(id=i, name=n, frequency=f) for i, n, f in cats])
    for img_id, spec in images.items():
        gt['images'].append(dict(id=img_id, width=200, height=200,
                                 neg_category_ids=spec.get('neg', []),
                                 not_exhaustive_category_ids=spec.get('not_exhaustive', [])))
        for (x1, y1, x2, y2), cat in spec.get('gts', []):
            gt['annotations'].append(dict(id=len(gt['annotations']) + 1, image_id=img_id,
                                          category_id=cat, bbox=[x1, y1, x2 - x1, y2 - y1],
                                          area=(x2 - x1) * (y2 - y1)))
    return gt


def det(img_id: int, xyxy, cat: int, score: float) -> dict:
    x1, y1, x2, y2 = xyxy
    return dict(image_id=img_id, category_id=cat, bbox=[x1, y1, x2 - x1, y2 - y1], score=score)


def summarize(gt: dict, dets: list[dict], **kwargs) -> dict[str, float]:
    lvis_eval = LVISFederatedEval(gt, dets, **kwargs)
    lvis_eval.evaluate()
    return lvis_eval.summarize()


def test_perfect_predictions_give_one():
    big = [0, 0, 120, 120]  # large; B is small (400 px^2), C medium (1600 px^2)
    gt = lvis_gt({1: dict(gts=[(B, 1), (C, 2)]), 2: dict(gts=[(big, 3), (B, 3)])})
    dets = [det(i, ann_box, cat, 0.9) for i, ann in [(1, [(B, 1), (C, 2)]),
                                                     (2, [(big, 3), (B, 3)])]
            for ann_box, cat in ann]
    stats = summarize(gt, dets)
    for key in ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc', 'APf', 'AR@300'):
        assert stats[key] == pytest.approx(1.0), key


def test_false_positive_above_true_positive():
    # Three GT; ranked TP (.9), FP (.8), TP (.7): recall 1/3, 1/3, 2/3, precision 1, 1/2, 2/3.
    # Interpolated: 1 for recall <= 1/3 (0.00..0.33: 34 points), 2/3 up to 2/3 (0.34..0.66:
    # 33 points), 0 beyond (34 points).
    gt = lvis_gt({1: dict(gts=[(A, 3), (B, 3), (C, 3)])})
    dets = [det(1, A, 3, 0.9), det(1, [150, 150, 160, 160], 3, 0.8), det(1, B, 3, 0.7)]
    stats = summarize(gt, dets)
    assert stats['AP'] == pytest.approx((34 + 33 * 2 / 3) / 101)
    assert stats['APf'] == pytest.approx(stats['AP'])
    assert stats['APr'] == -1 and stats['APc'] == -1  # no GT in those groups
    assert stats['AR@300'] == pytest.approx(2 / 3)


@pytest.mark.parametrize('not_exhaustive, expected', [([2], 1.0), ([], 0.5)])
def test_unmatched_detection_of_not_exhaustive_category(not_exhaustive, expected):
    # 'bus' is annotated in image 1 but not exhaustively: the extra top-scoring bus box may
    # be an unannotated bus, so it is ignored; without the flag it is a FP ranked first
    # (precision 0 then 1/2 -> interpolated 1/2 everywhere).
    gt = lvis_gt({1: dict(gts=[(A, 2)], not_exhaustive=not_exhaustive)})
    stats = summarize(gt, [det(1, C, 2, 0.95), det(1, A, 2, 0.9)])
    assert stats['AP'] == pytest.approx(expected)


@pytest.mark.parametrize('neg, expected', [([], 1.0), ([3], 0.5)])
def test_detection_outside_pos_and_neg_is_dropped_but_neg_is_fp(neg, expected):
    # Image 1 has no cat; its cat detection only counts if cat is a verified negative there.
    gt = lvis_gt({1: dict(gts=[(A, 1)], neg=neg), 2: dict(gts=[(B, 3)])})
    dets = [det(1, A, 1, 0.5), det(1, C, 3, 0.95), det(2, B, 3, 0.9)]
    stats = summarize(gt, dets)
    assert stats['APf'] == pytest.approx(expected)
    assert stats['APr'] == pytest.approx(1.0)


def test_frequency_groups_split():
    # apple (r) perfect, bus (c) FP-then-TP (0.5), cat (f) missed (0).
    gt = lvis_gt({1: dict(gts=[(A, 1), (B, 2), (C, 3)])})
    dets = [det(1, A, 1, 0.9), det(1, [150, 150, 170, 170], 2, 0.8), det(1, B, 2, 0.7)]
    stats = summarize(gt, dets)
    assert (stats['APr'], stats['APc'], stats['APf']) == pytest.approx((1.0, 0.5, 0.0))
    assert stats['AP'] == pytest.approx(0.5)


def test_max_dets_keeps_top_scores_over_all_categories():
    # Three perfect boxes but only 2 kept: recall 2/3 at precision 1 -> 0.00..0.66 = 67 points.
    gt = lvis_gt({1: dict(gts=[(A, 3), (B, 3), (C, 3)])})
    dets = [det(1, A, 3, 0.9), det(1, B, 3, 0.8), det(1, C, 3, 0.7)]
    assert summarize(gt, dets, max_dets=2)['AP'] == pytest.approx(67 / 101)


def test_lvis_metric_end_to_end(tmp_path, capsys):
    ann = tmp_path / 'lvis.json'
    ann.write_text(json.dumps(lvis_gt({1: dict(gts=[(A, 1), (B, 3)])})))
    out = tmp_path / 'res'
    metric = METRICS.build(dict(type='LVISMetric', ann_file=str(ann), classwise=True,
                                outfile_prefix=str(out)))
    # classes in a different order than the ids: label 0 = 'cat' (id 3), label 2 = 'apple'.
    metric.dataset_meta = dict(classes=('cat', 'bus', 'apple'))
    metric.process({}, [sample(1, [A, B], [0.8, 0.9], [2, 0])])
    res = metric.evaluate(1)
    assert res['lvis/bbox_AP'] == pytest.approx(1.0)
    assert res['lvis/bbox_APc'] == -1
    assert set(res) == {f'lvis/bbox_{k}' for k in
                        ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc', 'APf')}
    saved = json.loads((tmp_path / 'res.bbox.json').read_text())
    assert sorted(d['category_id'] for d in saved) == [1, 3]
    assert 'LVIS evaluate: 3/3 categories [' in capsys.readouterr().err  # the progress line


def test_bad_inputs_raise(tmp_path):
    gt = lvis_gt({1: dict(gts=[(A, 1)])})
    with pytest.raises(ValueError, match='not in the LVIS annotation file'):
        LVISFederatedEval(gt, [det(9, A, 1, 0.5)])
    gt['categories'][0].pop('frequency')
    with pytest.raises(ValueError, match='frequency'):
        LVISFederatedEval(gt, [])
    ann = tmp_path / 'lvis.json'
    ann.write_text(json.dumps(lvis_gt({1: dict(gts=[(A, 1)])})))
    with pytest.raises(ValueError, match='bbox'):
        LVISMetric(ann_file=str(ann), metric='keypoints')


def test_agrees_with_faster_coco_eval_lvis_mode():
    """An independent implementation of the same rules gives the same numbers."""
    import copy

    import numpy as np
    from faster_coco_eval import COCO, COCOeval_faster

    rng = np.random.default_rng(1)
    cats = [(i, f'c{i}', 'rcf'[i % 3]) for i in range(1, 7)]
    images, dets = {}, []
    for img_id in range(1, 11):
        gts = []
        for _ in range(rng.integers(1, 6)):
            xy, wh, cat = rng.uniform(0, 150, 2), rng.uniform(4, 120, 2), int(rng.integers(1, 7))
            gts.append(([*xy, *(xy + wh)], cat))
            for _ in range(2):  # jittered detections, 20% with a random category
                box = np.array([*xy, *(xy + wh)]) + rng.normal(0, 5, 4)
                box[2:] = np.maximum(box[2:], box[:2] + 1)
                label = cat if rng.random() < 0.8 else int(rng.integers(1, 7))
                dets.append(det(img_id, box.tolist(), label, float(rng.random())))
        present = {c for _, c in gts}
        absent = [c for c in range(1, 7) if c not in present]
        images[img_id] = dict(gts=gts, neg=[c for c in absent if rng.random() < 0.5],
                              not_exhaustive=[c for c in present if rng.random() < 0.3])
    gt = lvis_gt(images, cats)
    for ann in gt['annotations']:
        ann['iscrowd'] = 0
    ours = summarize(gt, dets)
    coco_gt = COCO(copy.deepcopy(gt))
    ref = COCOeval_faster(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), 'bbox',
                          lvis_style=True, print_function=lambda *a: None)
    ref.params.maxDets = [300]
    ref.evaluate()
    ref.accumulate()
    ref.summarize()
    ref_stats = ref.stats_as_dict
    pairs = {'AP': 'AP_all', 'AP50': 'AP_50', 'AP75': 'AP_75', 'APs': 'AP_small',
             'APm': 'AP_medium', 'APl': 'AP_large', 'APr': 'APr', 'APc': 'APc', 'APf': 'APf',
             'AR@300': 'AR_all'}
    assert 0.1 < ours['AP'] < 0.9
    for key, ref_key in pairs.items():
        assert ours[key] == pytest.approx(ref_stats[ref_key], abs=1e-9), key
