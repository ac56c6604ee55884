"""CocoMetric: hand-computed AP, perfect predictions, backends, class mapping, file output."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from mmengine.logging import MMLogger

from codetr.evaluation import CocoMetric
from codetr.evaluation.coco_metric import BACKENDS, load_coco, run_cocoeval
from codetr.registry import METRICS

from .helpers import coco_dict, sample, write_json

KEYS = ['bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l']


def run(metric: CocoMetric, samples: list[dict], classes) -> dict:
    metric.dataset_meta = dict(classes=tuple(classes))
    metric.process({}, samples)
    return metric.evaluate(len(samples))


@pytest.fixture
def two_box_ann(tmp_path):
    # Two small (area 100 < 32**2) GT boxes of category 'a'.
    gt = coco_dict({1: [([0, 0, 10, 10], 1), ([20, 20, 30, 30], 1)]}, [(1, 'a'), (2, 'b')])
    return write_json(gt, tmp_path / 'gt.json')


@pytest.mark.parametrize('backend', ['pycocotools', 'faster_coco_eval'])
def test_hand_computed_ap(two_box_ann, backend):
    # Ranked TP (IoU 1), FP, TP (IoU 80/100 = 0.8): recall .5, .5, 1; precision 1, 1/2, 2/3.
    # Interpolated precision is 1 up to recall .5 (51 of the 101 points) and 2/3 after (50).
    dets = [[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 28]]
    res = run(CocoMetric(ann_file=two_box_ann, backend=backend),
              [sample(1, dets, [0.9, 0.8, 0.7], [0, 0, 0])], ('a', 'b'))
    ap_both = (51 + 50 * 2 / 3) / 101
    ap_one = 51 / 101  # IoU thresholds .85, .9, .95: only the first box matches
    expected_map = (7 * ap_both + 3 * ap_one) / 10  # thresholds .50 ... .80 are 7 of 10
    assert res['coco/bbox_mAP_50'] == pytest.approx(ap_both, abs=1e-9)
    assert res['coco/bbox_mAP_75'] == pytest.approx(ap_both, abs=1e-9)
    assert res['coco/bbox_mAP'] == pytest.approx(expected_map, abs=1e-9)
    assert res['coco/bbox_mAP_s'] == pytest.approx(expected_map, abs=1e-9)
    assert res['coco/bbox_mAP_m'] == -1 and res['coco/bbox_mAP_l'] == -1  # no GT there


def test_perfect_predictions_give_one(tmp_path):
    boxes = {1: [([0, 0, 10, 10], 1), ([0, 0, 50, 50], 2)],   # small, medium
             2: [([10, 10, 150, 150], 1)]}                       # large
    ann = write_json(coco_dict(boxes, [(1, 'a'), (2, 'b')]), tmp_path / 'gt.json')
    samples = [sample(i, [b for b, _ in anns], [0.9] * len(anns), [c - 1 for _, c in anns])
               for i, anns in boxes.items()]
    res = run(CocoMetric(ann_file=ann), samples, ('a', 'b'))
    assert set(res) == {f'coco/{k}' for k in KEYS}
    for key in KEYS:
        assert res[f'coco/{key}'] == pytest.approx(1.0)


def test_labels_map_to_categories_by_name(tmp_path):
    # Category ids 7 ('dog') and 3 ('cat'); the dataset's classes are ('dog', 'cat'), so
    # label 0 means id 7. A metric mapping by id order would give 0 AP here.
    ann = write_json(coco_dict({1: [([0, 0, 10, 10], 7), ([40, 40, 60, 60], 3)]},
                               [(3, 'cat'), (7, 'dog')]), tmp_path / 'gt.json')
    res = run(CocoMetric(ann_file=ann), [sample(1, [[0, 0, 10, 10], [40, 40, 60, 60]],
                                                [0.9, 0.8], [0, 1])], ('dog', 'cat'))
    assert res['coco/bbox_mAP'] == pytest.approx(1.0)


def test_missing_class_name_and_bad_label_raise(two_box_ann):
    with pytest.raises(ValueError, match='not category names'):
        run(CocoMetric(ann_file=two_box_ann), [sample(1, [[0, 0, 1, 1]], [1.], [0])], ('a', 'z'))
    with pytest.raises(ValueError, match='outside the 2 classes'):
        run(CocoMetric(ann_file=two_box_ann), [sample(1, [[0, 0, 1, 1]], [1.], [2])], ('a', 'b'))


def test_bad_config_raises():
    with pytest.raises(ValueError, match='outfile_prefix'):
        CocoMetric(format_only=True)
    with pytest.raises(ValueError, match='backend'):
        CocoMetric(backend='lvis')
    with pytest.raises(ValueError, match='not supported'):
        CocoMetric(metric='keypoints')


def test_backends_agree_on_random_predictions(tmp_path):
    rng = np.random.default_rng(0)
    boxes, samples = {}, []
    for img_id in range(1, 7):
        xy = rng.uniform(0, 150, (5, 2))
        wh = rng.uniform(5, 140, (5, 2))
        gt = np.concatenate([xy, xy + wh], 1)
        cats = rng.integers(1, 4, 5)
        boxes[img_id] = [(b.tolist(), int(c)) for b, c in zip(gt, cats)]
        # Jittered copies of the GT, some with wrong labels, plus pure noise boxes.
        det = np.concatenate([gt + rng.normal(0, 6, gt.shape), gt[:2] + 30], 0)
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
        labels = np.concatenate([cats - 1, rng.integers(0, 3, 2)])
        labels[rng.random(len(labels)) < 0.2] = rng.integers(0, 3)
        samples.append(sample(img_id, det.tolist(), rng.random(len(det)).tolist(),
                              labels.tolist()))
    ann = write_json(coco_dict(boxes, [(1, 'a'), (2, 'b'), (3, 'c')]), tmp_path / 'gt.json')
    ref = run(CocoMetric(ann_file=ann), samples, 'abc')
    fast = run(CocoMetric(ann_file=ann, backend='faster_coco_eval'), samples, 'abc')
    assert 0.05 < ref['coco/bbox_mAP'] < 0.95  # a non-trivial case
    for key in ref:
        assert fast[key] == pytest.approx(ref[key], abs=1e-6), key


def _random_coco_case(seed: int, crowd: float, tied_scores: bool) -> tuple[dict, list]:
    """A COCO gt dict (3 classes, 10 images, the first without boxes, a ``crowd`` share of
    crowd boxes) and result dicts: jittered GT copies (a fifth mislabelled) and noise boxes,
    scores rounded to 0.1 when ``tied_scores`` (ties exercise the sort order)."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for img_id in range(1, 11):
        width, height = (int(v) for v in rng.integers(100, 400, 2))
        images.append(dict(id=img_id, width=width, height=height, file_name=f'{img_id}.jpg'))
        for _ in range(0 if img_id == 1 else int(rng.integers(1, 8))):
            x, y, w, h = rng.uniform(0, width - 5), rng.uniform(0, height - 5), *rng.uniform(
                2, 200, 2)
            cat = int(rng.integers(1, 4))
            anns.append(dict(id=len(anns) + 1, image_id=img_id, category_id=cat,
                             bbox=[x, y, w, h], area=w * h, iscrowd=int(rng.random() < crowd)))
            for _ in range(int(rng.integers(0, 3))):
                jitter = rng.normal(0, 8, 4)
                label = cat if rng.random() < 0.8 else int(rng.integers(1, 4))
                dets.append(dict(image_id=img_id, category_id=label, score=float(rng.random()),
                                 bbox=[x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]),
                                       max(1.0, h + jitter[3])]))
        for _ in range(int(rng.integers(0, 4))):
            dets.append(dict(image_id=img_id, category_id=int(rng.integers(1, 4)),
                             score=float(rng.random()),
                             bbox=[*rng.uniform(0, width, 1), *rng.uniform(0, height, 1),
                                   *rng.uniform(1, 100, 2)]))
    if tied_scores:
        for det in dets:
            det['score'] = round(det['score'], 1)
    gt = dict(images=images, annotations=anns,
              categories=[dict(id=i, name=n) for i, n in enumerate('abc', start=1)])
    return gt, [dict(d, bbox=[float(v) for v in d['bbox']]) for d in dets]


@pytest.mark.parametrize('crowd, tied_scores', [(0.0, False), (0.25, True)])
def test_backends_give_every_cocoeval_number_alike(crowd, tied_scores):
    """faster-coco-eval is the default backend because it gives pycocotools' numbers: all
    12 summary stats, the full precision (T, R, K, A, M) and recall (T, K, A, M) arrays, for
    class-aware AP and for class-agnostic proposal recall, with crowd boxes, tied scores and
    an image without boxes."""
    gt, dets = _random_coco_case(seed=3, crowd=crowd, tied_scores=tied_scores)
    for proposal_nums in (None, (100, 300, 1000)):
        runs = {}
        for backend in BACKENDS:
            coco_gt = load_coco(backend, copy.deepcopy(gt))
            runs[backend], _ = run_cocoeval(backend, coco_gt, copy.deepcopy(dets),
                                            list(range(1, 11)), [1, 2, 3], proposal_nums)
        ref, fast = runs['pycocotools'], runs['faster_coco_eval']
        assert len(ref.stats) == 12 and 0.05 < ref.stats[0] < 0.95  # a non-trivial case
        np.testing.assert_allclose(np.asarray(fast.stats)[:12], ref.stats, rtol=0, atol=1e-12)
        for key in ('precision', 'recall'):
            reference = np.asarray(ref.eval[key])
            assert np.asarray(fast.eval[key]).shape == reference.shape
            np.testing.assert_allclose(fast.eval[key], reference, rtol=0, atol=1e-12)
    assert CocoMetric().backend == 'faster_coco_eval'


def test_classwise_table_is_logged(two_box_ann):
    logger = MMLogger.get_instance('test_classwise_table')
    messages = []
    original = logger.info
    logger.info = lambda msg, *a, **k: messages.append(str(msg))
    try:
        run(CocoMetric(ann_file=two_box_ann, classwise=True),
            [sample(1, [[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [0, 0])], ('a', 'b'))
    finally:
        logger.info = original
    log = '\n'.join(messages)
    assert 'Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all' in log  # 12-line summary
    row_a = next(line for line in log.splitlines() if line.startswith('| a '))
    row_b = next(line for line in log.splitlines() if line.startswith('| b '))
    assert row_a.split('|')[2].strip() == '1.000'
    assert row_b.split('|')[2].strip() == 'nan'  # no GT of class b


def test_format_only_writes_xywh_json(two_box_ann, tmp_path):
    prefix = str(tmp_path / 'out' / 'res')
    (tmp_path / 'out').mkdir()
    metric = CocoMetric(ann_file=two_box_ann, format_only=True, outfile_prefix=prefix)
    res = run(metric, [sample(1, [[1, 2, 11, 22]], [0.5], [1])], ('a', 'b'))
    assert res == {}
    entries = json.loads(open(prefix + '.bbox.json').read())
    assert entries == [dict(image_id=1, bbox=[1.0, 2.0, 10.0, 20.0], score=0.5, category_id=2)]


@pytest.mark.parametrize('backend', ['pycocotools', 'faster_coco_eval'])
def test_gt_from_instances_without_ann_file(backend):
    instances = [dict(bbox=[0, 0, 10, 10], bbox_label=1, ignore_flag=0),
                 dict(bbox=[50, 50, 90, 90], bbox_label=0, ignore_flag=1)]  # crowd: ignored
    metric = METRICS.build(dict(type='CocoMetric', backend=backend))
    res = run(metric, [sample(1, [[0, 0, 10, 10], [50, 50, 90, 90]], [0.9, 0.95], [1, 0],
                              instances=instances)], ('a', 'b'))
    # The detection on the crowd box is ignored, not a false positive.
    assert res['coco/bbox_mAP'] == pytest.approx(1.0)
    with pytest.raises(KeyError, match='meta_keys'):
        CocoMetric().process({}, [sample(1, [[0, 0, 1, 1]], [1.], [0])])


def test_proposal_recall(two_box_ann):
    res = run(CocoMetric(ann_file=two_box_ann, metric='proposal', proposal_nums=(1, 2, 10)),
              [sample(1, [[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [0, 0])], ('a', 'b'))
    assert res['coco/AR@1'] == pytest.approx(0.5)
    assert res['coco/AR@2'] == pytest.approx(1.0)
    assert res['coco/AR_s@10'] == pytest.approx(1.0)


@pytest.mark.parametrize('backend', ['pycocotools', 'faster_coco_eval'])
def test_evaluator_with_det_data_samples(two_box_ann, backend):
    """The Runner's path: mmengine's Evaluator turns DetDataSamples into dicts."""
    import torch
    from mmengine.evaluator import Evaluator
    from mmengine.structures import InstanceData

    from codetr.structures import DetDataSample

    sample = DetDataSample(metainfo=dict(img_id=1, ori_shape=(200, 300)))
    sample.pred_instances = InstanceData(bboxes=torch.tensor([[0., 0., 10., 10.]]),
                                         scores=torch.tensor([0.9]), labels=torch.tensor([0]))
    evaluator = Evaluator(dict(type='CocoMetric', ann_file=two_box_ann, backend=backend))
    evaluator.dataset_meta = dict(classes=('a', 'b'))
    evaluator.process([sample])
    res = evaluator.evaluate(1)
    assert res['coco/bbox_mAP_50'] == pytest.approx(51 / 101)  # recall 1/2 at precision 1


def test_unknown_image_and_missing_meta_raise(two_box_ann):
    with pytest.raises(ValueError, match='not in'):
        run(CocoMetric(ann_file=two_box_ann), [sample(42, [[0, 0, 1, 1]], [1.], [0])], 'ab')
    metric = CocoMetric(ann_file=two_box_ann)
    metric.process({}, [sample(1, [[0, 0, 1, 1]], [1.], [0])])
    with pytest.raises(KeyError, match='dataset_meta'):
        metric.evaluate(1)


@pytest.mark.parametrize('backend', ['pycocotools', 'faster_coco_eval'])
def test_evaluation_reports_progress_and_stage_times(two_box_ann, backend, capsys):
    logger = MMLogger.get_instance(f'test_stage_times_{backend}')
    messages = []
    original = logger.info
    logger.info = lambda msg, *a, **k: messages.append(str(msg))
    try:
        run(CocoMetric(ann_file=two_box_ann, backend=backend),
            [sample(1, [[0, 0, 10, 10]], [0.9], [0])], ('a', 'b'))
    finally:
        logger.info = original
    line = next(m for m in messages if m.startswith('COCO bbox evaluation of 1 images:'))
    assert [part.split()[0] for part in line.split(': ', 1)[1].split(', ')] == [
        'evaluate', 'accumulate', 'summarize']
    err = capsys.readouterr().err
    if backend == 'pycocotools':  # 1 image x 2 categories x (IoU + 4 area ranges)
        assert 'COCO bbox: 10/10 evals [' in err and '100%' in err
    else:
        assert 'evals' not in err


def test_repeated_ids_in_the_ground_truth_raise(tmp_path):
    gt = coco_dict({1: [([0, 0, 10, 10], 1), ([20, 20, 30, 30], 1)]}, [(1, 'a')])
    gt['annotations'][1]['id'] = 1
    path = write_json(gt, tmp_path / 'gt.json')
    with pytest.raises(ValueError, match=r'gt.json repeats annotation ids \[1\]; COCO '
                                         r'evaluation keeps one record per id'):
        CocoMetric(ann_file=path)
    gt = coco_dict({1: [], 2: []}, [(1, 'a')])
    gt['images'][1]['id'] = 1
    with pytest.raises(ValueError, match=r'repeats image ids \[1\]'):
        CocoMetric(ann_file=write_json(gt, tmp_path / 'gt2.json'))
