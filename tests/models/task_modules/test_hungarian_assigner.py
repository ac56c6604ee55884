"""HungarianAssigner: a hand-checked assignment, empty inputs, NaN costs, batched == per image."""
import itertools

import pytest
import torch
from mmengine.structures import InstanceData

from codetr.registry import TASK_UTILS

from .test_match_costs import IMG_META, scene

CO_DINO_COSTS = [dict(type='FocalLossCost', weight=2.0),
                 dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                 dict(type='IoUCost', iou_mode='giou', weight=2.0)]


def build_assigner(match_costs=None):
    return TASK_UTILS.build(dict(type='HungarianAssigner',
                                 match_costs=CO_DINO_COSTS if match_costs is None else match_costs))


def test_co_dino_costs_on_hand_checked_scene():
    # total cost (see test_match_costs): q0/g1 and q1/g0 cost 2 * focal - 0 - 2 ~ -3.16, the
    # crossed pairs ~ +5.83, q2 ~ +6.83 to either GT -> q0 <- g1, q1 <- g0, q2 background
    preds, gts = scene()
    result = build_assigner().assign(preds, gts, IMG_META)
    assert result.num_gts == 2
    assert result.gt_inds.tolist() == [2, 1, 0]
    assert result.labels.tolist() == [1, 0, -1]
    assert result.max_overlaps is None


class FixedCost:
    """A plain per-image callable (no batch_cost), as a user's own cost would be."""

    def __init__(self, matrix):
        self.matrix = torch.tensor(matrix)

    def __call__(self, pred_instances, gt_instances, img_meta=None):
        return self.matrix


def test_optimal_not_greedy_assignment_and_plain_callable_costs():
    # greedy on g0 takes q0 (1.0) and leaves g1 to q2 (3.0): total 4.0;
    # the optimum is q1 <- g0 (1.5) + q0 <- g1 (2.0) = 3.5
    cost = FixedCost([[1.0, 2.0], [1.5, 10.0], [3.0, 3.0]])
    preds, gts = scene()
    assigner = build_assigner([cost])
    result = assigner.assign(preds, gts, IMG_META)
    assert result.gt_inds.tolist() == [2, 1, 0]
    assert result.labels.tolist() == [1, 0, -1]
    # a plain callable combines with built costs; FocalLossCost is tiny next to these numbers
    mixed = build_assigner([cost, dict(type='FocalLossCost', weight=0.01)])
    assert mixed.assign(preds, gts, IMG_META).gt_inds.tolist() == [2, 1, 0]


def test_empty_gt_makes_every_query_background():
    preds, _ = scene()
    empty = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
    result = build_assigner().assign(preds, empty, IMG_META)
    assert result.num_gts == 0
    assert result.gt_inds.tolist() == [0, 0, 0]
    assert result.labels.tolist() == [-1, -1, -1]


def test_non_finite_cost_names_the_cost():
    preds, gts = scene()
    preds.bboxes[1, 2] = float('nan')
    with pytest.raises(ValueError, match=r'BBoxL1Cost.*IoUCost.*NaN or inf') as info:
        build_assigner().assign(preds, gts, IMG_META)
    assert 'FocalLossCost' not in str(info.value)
    preds, gts = scene()
    preds.scores[0, 0] = float('nan')
    with pytest.raises(ValueError, match=r'^match cost FocalLossCost\(weight=2.0\) gave'):
        build_assigner().assign(preds, gts, IMG_META)


def test_default_costs_are_co_dino_and_single_costs_are_accepted():
    costs = TASK_UTILS.build(dict(type='HungarianAssigner')).match_costs
    assert [(type(c).__name__, c.weight) for c in costs] == [
        ('FocalLossCost', 2.0), ('BBoxL1Cost', 5.0), ('IoUCost', 2.0)]
    assert costs[1].box_format == 'xywh' and costs[2].iou_mode == 'giou'
    single = build_assigner(dict(type='ClassificationCost'))
    assert len(single.match_costs) == 1
    assert len(build_assigner(FixedCost([[0.0]])).match_costs) == 1


def test_bad_config_raises():
    with pytest.raises(ValueError, match='at least one'):
        build_assigner([])
    with pytest.raises(ValueError, match='same number of predictions'):
        preds, gts = scene()
        build_assigner().assign_batch([preds, preds[:2]], [gts, gts], [IMG_META, IMG_META])


def random_batch(num_gts, num_queries=12, num_classes=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    preds, gts, metas = [], [], []
    for i, n in enumerate(num_gts):
        h, w = 64 + 16 * i, 96 - 8 * i
        preds.append(InstanceData(
            scores=torch.randn(num_queries, num_classes, generator=gen),
            bboxes=torch.rand(num_queries, 4, generator=gen) * 0.4 + 0.1))
        xy = torch.rand(n, 2, generator=gen) * 0.6
        wh = torch.rand(n, 2, generator=gen) * 0.3 + 0.05
        boxes = torch.cat([xy, xy + wh], dim=1) * torch.tensor([w, h, w, h])
        gts.append(InstanceData(bboxes=boxes,
                                labels=torch.randint(0, num_classes, (n,), generator=gen)))
        metas.append(dict(img_shape=(h, w)))
    return preds, gts, metas


@pytest.mark.parametrize('num_gts', [[3, 0, 5, 1], [0, 0], [12, 2]])
def test_batched_equals_per_image(num_gts):
    preds, gts, metas = random_batch(num_gts)
    assigner = build_assigner()
    batched = assigner.assign_batch(preds, gts, metas)
    assert len(batched) == len(num_gts)
    for p, g, m, result in zip(preds, gts, metas, batched):
        single = assigner.assign(p, g, m)
        assert result.num_gts == single.num_gts == len(g)
        assert torch.equal(result.gt_inds, single.gt_inds)
        assert torch.equal(result.labels, single.labels)
        # every GT is matched exactly once, and labels follow the matched GT
        matched = result.gt_inds[result.gt_inds > 0]
        assert sorted(matched.tolist()) == list(range(1, len(g) + 1))
        pos = result.gt_inds > 0
        assert torch.equal(result.labels[pos], g.labels[result.gt_inds[pos] - 1])
        assert (result.labels[~pos] == -1).all()


def test_assignment_is_the_brute_force_optimum():
    preds, gts, metas = random_batch([3], num_queries=5)
    assigner = build_assigner()
    cost = sum(c(preds[0], gts[0], metas[0]) for c in assigner.match_costs)  # (5, 3)
    result = assigner.assign(preds[0], gts[0], metas[0])
    rows = [int((result.gt_inds == g + 1).nonzero()) for g in range(3)]
    found = sum(cost[r, g] for g, r in enumerate(rows))
    best = min(sum(cost[r, g] for g, r in enumerate(perm))
               for perm in itertools.permutations(range(5), 3))
    torch.testing.assert_close(found, best)


def test_batch_cost_leaves_the_device_once(monkeypatch):
    preds, gts, metas = random_batch([2, 4, 1])
    calls = []
    original = torch.Tensor.cpu

    def counting_cpu(self, *args, **kwargs):
        calls.append(tuple(self.shape))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, 'cpu', counting_cpu)
    build_assigner().assign_batch(preds, gts, metas)
    assert calls == [(3, 12, 7)]  # one (B, Q, sum G) copy, not one per image or per cost


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_predictions_match_like_float32(dtype):
    # the scene's margins (about 3 cost units) are far above half-precision rounding
    preds, gts = scene()
    half = InstanceData(scores=preds.scores.to(dtype), bboxes=preds.bboxes.to(dtype))
    result = build_assigner().assign(half, gts, IMG_META)
    assert result.gt_inds.tolist() == [2, 1, 0]
    # a 1000 x 1000 px image: areas of 1e6 px overflow float16 unless costs run in float32
    big = InstanceData(bboxes=gts.bboxes * 5, labels=gts.labels)
    assert build_assigner().assign(half, big, dict(img_shape=(500, 1000))).gt_inds.tolist() == \
        [2, 1, 0]
