"""RandomSampler, PseudoSampler and SamplingResult: counts, fractions, GT proposals."""
import pytest
import torch
from mmengine.structures import InstanceData

from codetr.models.task_modules import AssignResult, PseudoSampler, RandomSampler
from codetr.registry import TASK_UTILS


def _case(num_pos: int = 30, num_neg: int = 100, num_ignored: int = 10):
    """Priors ``[i, i, i + 10, i + 10]``; the first ``num_pos`` assigned to GT 1 or 2."""
    n = num_pos + num_neg + num_ignored
    i = torch.arange(n, dtype=torch.float32)
    priors = torch.stack([i, i, i + 10, i + 10], dim=1)
    gt_inds = torch.cat([torch.arange(num_pos) % 2 + 1, torch.zeros(num_neg, dtype=torch.long),
                         torch.full((num_ignored,), -1)])
    labels = torch.where(gt_inds > 0, gt_inds + 6, -1)  # GT 1 -> class 7, GT 2 -> class 8
    assign = AssignResult(2, gt_inds, torch.rand(n), labels)
    gts = InstanceData(bboxes=torch.tensor([[0., 0., 5., 5.], [1., 1., 9., 9.]]),
                       labels=torch.tensor([7, 8]))
    return assign, InstanceData(priors=priors), gts


def test_random_sampler_caps_positives_and_fills_with_negatives():
    torch.manual_seed(0)
    sampler = TASK_UTILS.build(dict(type='RandomSampler', num=64, pos_fraction=0.25,
                                    add_gt_as_proposals=False))
    assign, preds, gts = _case()
    result = sampler.sample(assign, preds, gts)
    assert result.pos_inds.numel() == 16 and result.neg_inds.numel() == 48  # 64 * 0.25, rest
    assert (result.pos_inds < 30).all()
    assert ((result.neg_inds >= 30) & (result.neg_inds < 130)).all()  # never an ignored prior
    assert result.pos_inds.equal(result.pos_inds.unique())  # sorted, no repeats
    torch.testing.assert_close(result.pos_priors, preds.priors[result.pos_inds])
    torch.testing.assert_close(result.priors, torch.cat([result.pos_priors,
                                                         result.neg_priors]))
    gt_idx = result.pos_inds % 2  # by construction prior i belongs to GT i % 2 (0-based)
    assert result.pos_assigned_gt_inds.equal(gt_idx)
    assert result.pos_gt_labels.equal(gt_idx + 7)
    torch.testing.assert_close(result.pos_gt_bboxes, gts.bboxes[gt_idx])
    assert result.num_gts == 2 and (result.pos_is_gt == 0).all()
    assert result.avg_factor == 64
    assert result.info['num_pos'] == 16 and result.to(torch.device('cpu')) is result


def test_random_sampler_keeps_all_when_few_and_bounds_negatives():
    sampler = RandomSampler(num=512, pos_fraction=0.25, add_gt_as_proposals=False)
    assign, preds, gts = _case(num_pos=6, num_neg=20)
    result = sampler.sample(assign, preds, gts)
    assert result.pos_inds.tolist() == list(range(6))
    assert result.neg_inds.tolist() == list(range(6, 26))
    bounded = RandomSampler(num=512, pos_fraction=0.25, neg_pos_ub=2,
                            add_gt_as_proposals=False).sample(*_case(num_pos=6, num_neg=20))
    assert bounded.neg_inds.numel() == 12  # 2 negatives per positive
    no_pos = RandomSampler(num=512, pos_fraction=0.25, neg_pos_ub=3,
                           add_gt_as_proposals=False).sample(*_case(num_pos=0, num_neg=20))
    assert no_pos.pos_inds.numel() == 0 and no_pos.neg_inds.numel() == 3  # ub * max(1, 0)
    assert no_pos.pos_gt_bboxes.shape == (0, 4)


def test_gt_boxes_added_as_proposals():
    sampler = RandomSampler(num=512, pos_fraction=0.25, add_gt_as_proposals=True)
    assign, preds, gts = _case(num_pos=4, num_neg=10, num_ignored=0)
    result = sampler.sample(assign, preds, gts)
    # the 2 GT boxes come first, assigned to themselves; the priors shift by 2
    assert result.pos_inds.tolist() == [0, 1, 2, 3, 4, 5]
    assert result.pos_is_gt.tolist() == [1, 1, 0, 0, 0, 0]
    torch.testing.assert_close(result.pos_priors[:2], gts.bboxes)
    assert result.pos_assigned_gt_inds[:2].tolist() == [0, 1]
    assert result.pos_gt_labels[:2].tolist() == [7, 8]
    assert result.neg_inds.tolist() == list(range(6, 16))
    assert assign.num_preds == 16  # the assignment was extended in place


def test_pseudo_sampler_takes_everything():
    assign, preds, gts = _case(num_pos=5, num_neg=7, num_ignored=3)
    result = TASK_UTILS.build(dict(type='PseudoSampler')).sample(assign, preds, gts)
    assert result.pos_inds.tolist() == list(range(5))
    assert result.neg_inds.tolist() == list(range(5, 12))
    assert result.avg_factor == 5
    assert result.pos_gt_labels.tolist() == [7, 8, 7, 8, 7]


def test_bad_sampler_configs_and_positives_without_gts():
    with pytest.raises(ValueError, match='pos_fraction'):
        RandomSampler(num=8, pos_fraction=1.5)
    assign, preds, _ = _case(num_pos=2, num_neg=2)
    empty = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match='no GT box'):
        PseudoSampler().sample(assign, preds, empty)
