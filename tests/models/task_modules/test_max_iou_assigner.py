"""MaxIoUAssigner: thresholds, negative ranges, low-quality matches, ignored boxes."""
import pytest
import torch
from mmengine.structures import InstanceData

from codetr.models.task_modules import MaxIoUAssigner
from codetr.registry import TASK_UTILS

# IoU with the GT [0, 0, 10, 10]:   1.0           0.5            0.3           0        0.8
PRIORS = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 5.], [0., 0., 10., 3.],
                       [20., 20., 30., 30.], [0., 0., 10., 8.]])


def _gts(boxes, labels=None):
    labels = torch.arange(len(boxes)) + 5 if labels is None else torch.tensor(labels)
    return InstanceData(bboxes=torch.tensor(boxes).reshape(-1, 4), labels=labels)


def test_thresholds_split_positive_ignored_negative():
    assigner = TASK_UTILS.build(dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3))
    result = assigner.assign(InstanceData(priors=PRIORS), _gts([[0., 0., 10., 10.]]))
    # IoU 0.3 is not below neg_iou_thr 0.3, so it is ignored, not negative
    assert result.gt_inds.tolist() == [1, -1, -1, 0, 1]
    assert result.labels.tolist() == [5, -1, -1, -1, 5]
    torch.testing.assert_close(result.max_overlaps, torch.tensor([1., 0.5, 0.3, 0., 0.8]))


def test_negative_range():
    assigner = MaxIoUAssigner(pos_iou_thr=0.7, neg_iou_thr=(0.1, 0.4))
    result = assigner.assign(InstanceData(priors=PRIORS), _gts([[0., 0., 10., 10.]]))
    assert result.gt_inds.tolist() == [1, -1, 0, -1, 1]


def test_low_quality_matches():
    gts = _gts([[0., 0., 10., 10.], [40., 40., 50., 60.]])
    priors = torch.cat([PRIORS, torch.tensor([[40., 40., 50., 50.], [40., 50., 50., 60.]])])
    # the second GT's best priors (5 and 6) both have IoU 0.5 < pos_iou_thr
    all_best = MaxIoUAssigner(0.7, 0.3, min_pos_iou=0.3).assign(InstanceData(priors=priors), gts)
    assert all_best.gt_inds[5:].tolist() == [2, 2]
    assert all_best.labels[5:].tolist() == [6, 6]
    first_best = MaxIoUAssigner(0.7, 0.3, min_pos_iou=0.3, gt_max_assign_all=False).assign(
        InstanceData(priors=priors), gts)
    assert first_best.gt_inds[5:].tolist() == [2, -1]
    too_low = MaxIoUAssigner(0.7, 0.3, min_pos_iou=0.6).assign(InstanceData(priors=priors), gts)
    assert too_low.gt_inds[5:].tolist() == [-1, -1]
    off = MaxIoUAssigner(0.7, 0.3, match_low_quality=False).assign(InstanceData(priors=priors),
                                                                    gts)
    assert off.gt_inds[5:].tolist() == [-1, -1]


@pytest.mark.parametrize('assign_all', [True, False])
def test_duplicate_gts_later_gt_wins_the_low_quality_match(assign_all):
    gts = _gts([[0., 0., 10., 10.], [0., 0., 10., 10.]])
    result = MaxIoUAssigner(0.7, 0.3, gt_max_assign_all=assign_all).assign(
        InstanceData(priors=PRIORS), gts)
    # by IoU prior 0 goes to the first GT (argmax); the low-quality pass then gives it to the
    # second, as MMDetection's loop over GTs does; prior 4 (IoU 0.8) stays with the first
    assert result.gt_inds[[0, 4]].tolist() == [2, 1]


def test_ignored_boxes_and_empty_inputs():
    gts = _gts([[0., 0., 10., 10.]])
    ignore = InstanceData(bboxes=torch.tensor([[19., 19., 31., 31.]]))
    assigner = MaxIoUAssigner(0.7, 0.3, ignore_iof_thr=0.5)
    result = assigner.assign(InstanceData(priors=PRIORS), gts, ignore)
    assert result.gt_inds[3] == -1  # would be negative without the ignored box
    empty = assigner.assign(InstanceData(priors=PRIORS), _gts([], labels=[]))
    assert empty.gt_inds.tolist() == [0] * 5 and empty.labels.tolist() == [-1] * 5
    none = assigner.assign(InstanceData(priors=torch.zeros(0, 4)), gts)
    assert none.gt_inds.numel() == 0 and none.num_gts == 1


def test_cpu_fallback_gives_same_result_and_score_column_is_ignored():
    gts = _gts([[0., 0., 10., 10.], [40., 40., 50., 60.]])
    priors = torch.cat([PRIORS, torch.ones(5, 1)], dim=1)  # proposals with a score column
    a = MaxIoUAssigner(0.7, 0.3).assign(InstanceData(priors=priors), gts)
    b = MaxIoUAssigner(0.7, 0.3, gpu_assign_thr=1).assign(InstanceData(priors=priors), gts)
    assert a.gt_inds.equal(b.gt_inds) and a.labels.equal(b.labels)
    with pytest.raises(ValueError, match='neg_iou_thr'):
        MaxIoUAssigner(0.7, (0.1, 0.2, 0.3))
