"""ATSSAssigner: hand-made single-GT cases, the centre-inside rule, a loop reference."""
import pytest
import torch
from mmengine.structures import InstanceData

from codetr.models.task_modules import AnchorGenerator, ATSSAssigner, BboxOverlaps2D
from codetr.registry import TASK_UTILS
from codetr.structures import bbox_overlaps


def _grid_anchors(size: int, scale: float) -> torch.Tensor:
    """Square anchors of side ``8 * scale`` centred at (8i, 8j) of a ``size x size`` map."""
    gen = AnchorGenerator(strides=[8], ratios=[1.0], scales=[scale])
    return gen.grid_priors([(size, size)])[0]


def _assign(assigner, priors, gt_boxes, levels=None, **pred):
    gts = InstanceData(bboxes=torch.tensor(gt_boxes), labels=torch.arange(len(gt_boxes)) + 3)
    return assigner.assign(InstanceData(priors=priors, **pred), levels or [len(priors)], gts)


def test_single_gt_on_4x4_level_by_hand():
    priors = _grid_anchors(4, 2.)  # 16 px anchors centred at x, y in {0, 8, 16, 24}
    assigner = TASK_UTILS.build(dict(type='ATSSAssigner', topk=4))
    # GT centre (11, 7): the 4 closest anchor centres are (8, 8), (16, 8), (8, 0), (16, 0)
    # with IoUs 168/304, 144/328, 98/374, 84/388; mean + std = 0.5239, so only (8, 8) passes
    result = _assign(assigner, priors, [[2., 1., 20., 13.]])
    ious = torch.tensor([168 / 304, 144 / 328, 98 / 374, 84 / 388])
    assert float(ious.mean() + ious.std()) == pytest.approx(0.52387, abs=1e-4)
    expected = torch.zeros(16, dtype=torch.long)
    expected[5] = 1  # row y=8, column x=8
    assert result.gt_inds.equal(expected)
    assert result.labels[5] == 3 and (result.labels[expected == 0] == -1).all()
    assert float(result.max_overlaps[5]) == pytest.approx(168 / 304, abs=1e-5)
    assert (result.max_overlaps[expected == 0] < -1e7).all()  # -INF off the positives


def test_candidate_centres_must_lie_inside_the_gt():
    priors = _grid_anchors(4, 4.)  # 32 px anchors
    assigner = ATSSAssigner(topk=2)
    # candidates (8, 16) and (16, 16) have equal IoU, so both meet the threshold (std 0) ...
    inside = _assign(assigner, priors, [[7., 2., 17., 30.]])
    assert torch.nonzero(inside.gt_inds).flatten().tolist() == [9, 10]
    # ... but for a GT 6 px wide (x in [9, 15]) both centres are outside: no positive
    outside = _assign(assigner, priors, [[9., 2., 15., 30.]])
    assert (outside.gt_inds == 0).all()


def _reference_atss(priors, gts, levels, topk):
    """A per-GT loop written from the ATSS paper, for comparison."""
    ious = bbox_overlaps(priors, gts)
    centres = (priors[:, :2] + priors[:, 2:]) / 2
    best = torch.full((len(priors),), -1.)
    gt_inds = torch.zeros(len(priors), dtype=torch.long)
    for g, gt in enumerate(gts):
        dist = ((centres - (gt[:2] + gt[2:]) / 2) ** 2).sum(-1).sqrt()
        cand, start = [], 0
        for n in levels:
            order = torch.argsort(dist[start:start + n])[:topk]
            cand += (order + start).tolist()
            start += n
        cand_ious = ious[cand, g]
        thr = cand_ious.mean() + cand_ious.std()
        for i in cand:
            cx, cy = centres[i].tolist()
            inside = min(cx - gt[0], cy - gt[1], gt[2] - cx, gt[3] - cy) > 0.01
            if ious[i, g] >= thr and inside and ious[i, g] > best[i]:
                best[i], gt_inds[i] = ious[i, g], g + 1
    return gt_inds


def test_matches_a_loop_reference_on_random_boxes():
    gen = AnchorGenerator(strides=[8, 16], ratios=[0.5, 1.0, 2.0], octave_base_scale=4,
                          scales_per_octave=1)
    sizes = [(8, 8), (4, 4)]
    priors = torch.cat(gen.grid_priors(sizes))
    levels = [8 * 8 * 3, 4 * 4 * 3]
    torch.manual_seed(0)
    xy = torch.rand(5, 2) * 40
    gts = torch.cat([xy, xy + 8 + torch.rand(5, 2) * 40], dim=1)
    result = _assign(ATSSAssigner(topk=9), priors, gts.tolist(), levels)
    expected = _reference_atss(priors, gts, levels, topk=9)
    assert result.gt_inds.equal(expected)
    assert (expected > 0).sum() > 5  # the case exercises several positives
    pos = expected > 0
    torch.testing.assert_close(result.labels[pos], expected[pos] - 1 + 3)


def test_overlapping_gts_take_the_higher_iou():
    priors = _grid_anchors(4, 2.)
    result = _assign(ATSSAssigner(topk=4), priors, [[0., 0., 16., 16.], [1., 1., 15., 17.]])
    # anchor 5 = [0, 0, 16, 16] equals GT 1, so it goes to GT 1 even if GT 2 also selects it
    assert result.gt_inds[5] == 1
    assert float(result.max_overlaps[5]) == pytest.approx(1.0)


def test_alpha_one_with_prior_boxes_equals_plain_iou():
    priors = _grid_anchors(4, 2.)
    gt = [[2., 1., 20., 13.]]
    plain = _assign(ATSSAssigner(topk=4), priors, gt)
    dynamic = _assign(ATSSAssigner(topk=4, alpha=1.0), priors, gt, bboxes=priors,
                      scores=torch.zeros(16, 5))
    assert dynamic.gt_inds.equal(plain.gt_inds)
    with pytest.raises(ValueError, match='scores'):
        _assign(ATSSAssigner(topk=4, alpha=0.8), priors, gt)


def test_empty_gts_ignore_and_bad_level_counts():
    priors = _grid_anchors(2, 2.)
    empty = ATSSAssigner().assign(InstanceData(priors=priors), [4],
                                  InstanceData(bboxes=torch.zeros(0, 4),
                                               labels=torch.zeros(0, dtype=torch.long)))
    assert (empty.gt_inds == 0).all() and (empty.labels == -1).all() and empty.num_gts == 0
    gts = InstanceData(bboxes=torch.tensor([[0., 0., 8., 8.]]), labels=torch.tensor([0]))
    ignore = InstanceData(bboxes=torch.tensor([[-8., -8., 16., 8.]]))
    result = ATSSAssigner(topk=2, ignore_iof_thr=0.5).assign(
        InstanceData(priors=priors), [4], gts, ignore)
    # the top row lies inside the ignored box (IoF 1); the bottom row only half (IoF 0.5)
    assert result.gt_inds[:2].tolist() == [-1, -1] and (result.gt_inds[2:] >= 0).all()
    with pytest.raises(ValueError, match='num_level_priors'):
        ATSSAssigner().assign(InstanceData(priors=priors), [3], gts)


def test_bbox_overlaps_2d_drops_score_column():
    calc = BboxOverlaps2D()
    boxes = torch.tensor([[0., 0., 10., 10., 0.9]])
    torch.testing.assert_close(calc(boxes, torch.tensor([[0., 0., 10., 5.]])),
                               torch.tensor([[0.5]]))
    with pytest.raises(ValueError, match='4 \\(xyxy\\)'):
        calc(torch.zeros(1, 3), torch.zeros(1, 4))
