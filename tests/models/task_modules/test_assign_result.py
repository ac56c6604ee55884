"""AssignResult fields and add_gt_."""
import pytest
import torch

from codetr.models.task_modules import AssignResult


def test_add_gt_prepends_self_assigned_gt():
    result = AssignResult(2, torch.tensor([0, 2, -1]), torch.tensor([0.1, 0.7, 0.3]),
                          torch.tensor([-1, 5, -1]))
    result.add_gt_(torch.tensor([3, 5]))
    assert result.gt_inds.tolist() == [1, 2, 0, 2, -1]
    torch.testing.assert_close(result.max_overlaps, torch.tensor([1.0, 1.0, 0.1, 0.7, 0.3]))
    assert result.labels.tolist() == [3, 5, -1, 5, -1]
    assert result.num_preds == 5
    assert repr(result) == '<AssignResult num_gts=2 num_preds=5 num_pos=3>'


def test_add_gt_without_overlaps_and_extra_properties():
    result = AssignResult(1, torch.tensor([0, 1]), None, torch.tensor([-1, 4]))
    result.add_gt_(torch.tensor([4]))
    assert result.max_overlaps is None and result.gt_inds.tolist() == [1, 0, 1]
    result.set_extra_property('pos_idx', torch.tensor([2]))
    assert result.get_extra_property('pos_idx').tolist() == [2]
    assert result.get_extra_property('missing') is None
    assert set(result.info) == {'num_gts', 'num_preds', 'gt_inds', 'max_overlaps', 'labels',
                                'pos_idx'}
    with pytest.raises(KeyError, match='gt_inds'):
        result.set_extra_property('gt_inds', None)
