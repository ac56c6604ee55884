"""One ``model.num_classes`` reaches every head; a head's own different count is an error."""
import pytest
from mmengine.config import Config
from torch import nn

from codetr.models.detectors.num_classes import class_count_keys, fill_num_classes
from codetr.registry import MODELS

QUICKSTART_K2 = 'configs/quickstart/co_dino_r18_k2_quickstart_synthetic.py'


def heads(**atss):
    query = dict(type='CoDINOHead', embed_dims=32)
    aux = dict(rcnn=dict(type='CoRPNRoIHead', rpn=dict(in_channels=32),
                         roi=dict(bbox_head=dict(in_channels=32))),
               atss=dict(type='CoATSSHead', in_channels=32, **atss))
    return query, aux


def test_model_num_classes_fills_every_head_including_nested_ones():
    query, aux = heads()
    query_out, aux_out, n = fill_num_classes(5, query, aux)
    assert n == 5 and query_out['num_classes'] == 5
    assert aux_out['atss']['num_classes'] == 5
    assert aux_out['rcnn']['roi']['bbox_head']['num_classes'] == 5
    assert 'num_classes' not in aux_out['rcnn']['rpn']  # the RPN is class-agnostic
    assert 'num_classes' not in query and 'num_classes' not in aux['atss']  # inputs untouched


def test_a_head_value_that_differs_from_model_num_classes_names_both():
    query, aux = heads(num_classes=20)
    with pytest.raises(ValueError, match=r'model.aux_heads.atss.num_classes=20 \(CoATSSHead\) '
                                         r'differs from model.num_classes=5: every head'):
        fill_num_classes(5, query, aux)
    query, aux = heads()
    aux['rcnn']['roi']['bbox_head']['num_classes'] = 4
    with pytest.raises(ValueError, match=r'model.aux_heads.rcnn.roi.bbox_head.num_classes=4 '
                                         r'\(CoRPNRoIHead\)'):
        fill_num_classes(5, query, aux)
    fill_num_classes(5, *heads(num_classes=5))  # equal values are fine


def test_without_model_num_classes_the_query_head_is_the_reference():
    query, aux = heads(num_classes=20)
    query['num_classes'] = 80
    with pytest.raises(ValueError, match=r'model.aux_heads.atss.num_classes=20 \(CoATSSHead\) '
                                         r'differs from model.query_head.num_classes '
                                         r'\(CoDINOHead\)=80'):
        fill_num_classes(None, query, aux)
    query, aux = heads()
    query['num_classes'] = 7
    _, aux_out, n = fill_num_classes(None, query, aux)
    assert n == 7 and aux_out['rcnn']['roi']['bbox_head']['num_classes'] == 7
    with pytest.raises(ValueError, match='set model.num_classes'):
        fill_num_classes(None, *heads())
    with pytest.raises(ValueError, match='positive integer'):
        fill_num_classes(0, *heads())


class _AgnosticHead(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()


class _KwargsHead(nn.Module):
    def __init__(self, **kwargs) -> None:
        super().__init__()


class _NestedHead(nn.Module):
    num_classes_keys = ('mask.num_classes', 'box.num_classes')


class _DistributingHead(_NestedHead):
    """Takes num_classes itself (and hands it to its parts), like a Mask R-CNN head."""

    def __init__(self, num_classes: int | None = None, **kwargs) -> None:
        super().__init__()


def test_which_keys_receive_a_class_count():
    assert class_count_keys(dict(type=_AgnosticHead)) == []
    assert class_count_keys(dict(type=_KwargsHead)) == []
    assert class_count_keys(dict(type=_NestedHead)) == ['mask.num_classes', 'box.num_classes']
    assert class_count_keys(dict(type=_DistributingHead)) == ['num_classes']
    assert class_count_keys(dict(type='CoFCOSHead')) == ['num_classes']
    assert class_count_keys(dict(type='CoRPNRoIHead')) == ['roi.bbox_head.num_classes']
    aux = dict(n=dict(type=_NestedHead), d=dict(type=_DistributingHead),
               k=dict(type=_KwargsHead), a=dict(type=_AgnosticHead))
    _, aux, _ = fill_num_classes(4, dict(type='CoDINOHead'), aux)
    assert aux['n'] == dict(type=_NestedHead, mask=dict(num_classes=4), box=dict(num_classes=4))
    assert aux['d'] == dict(type=_DistributingHead, num_classes=4)
    assert aux['k'] == dict(type=_KwargsHead) and aux['a'] == dict(type=_AgnosticHead)


def test_set_values_are_checked_even_where_nothing_is_filled():
    for head in (dict(type=_KwargsHead, num_classes=3),
                 dict(type=_DistributingHead, box=dict(num_classes=3))):
        with pytest.raises(ValueError, match='=3 .* differs from model.num_classes=4'):
            fill_num_classes(4, dict(type='CoDINOHead'), dict(h=head))


def test_config_sets_the_count_once_and_a_conflicting_override_fails_at_build():
    cfg = Config.fromfile(QUICKSTART_K2)
    assert cfg.model.num_classes == 8
    assert 'num_classes' not in cfg.model.query_head
    assert 'num_classes' not in cfg.model.aux_heads.atss
    cfg.merge_from_dict({'model.aux_heads.atss.num_classes': 20})
    with pytest.raises(ValueError, match=r'model.aux_heads.atss.num_classes=20 \(CoATSSHead\) '
                                         r'differs from model.num_classes=8'):
        MODELS.build(cfg.model)
