import numpy as np
import pytest
import torch

from codetr.datasets.transforms import Pad
from codetr.registry import TRANSFORMS
from codetr.structures import DetDataSample

from .painted import painted_results


def test_pad_to_fixed_size_bottom_right_with_value():
    res = painted_results((20, 40), [[1, 2, 10, 12]])
    original = res['img'].copy()
    out = TRANSFORMS.build(dict(type='Pad', size=(50, 30), pad_val=dict(img=(114, 114, 114))))(res)
    assert out['img'].shape == (30, 50, 3)
    assert out['pad_shape'] == (30, 50, 3) and out['img_shape'] == (30, 50)
    np.testing.assert_array_equal(out['img'][:20, :40], original)
    assert (out['img'][20:] == 114).all() and (out['img'][:, 40:] == 114).all()
    np.testing.assert_array_equal(out['gt_bboxes'], [[1, 2, 10, 12]])  # boxes stay valid


@pytest.mark.parametrize('cfg, hw, shape', [
    (dict(size_divisor=32), (33, 20), (64, 32)),
    (dict(size_divisor=8), (16, 17), (16, 24)),
    (dict(pad_to_square=True), (20, 40), (40, 40)),
    (dict(pad_to_square=True, size_divisor=32), (20, 40), (64, 64)),
])
def test_pad_shapes(cfg, hw, shape):
    out = Pad(**cfg)(painted_results(hw, []))
    assert out['img'].shape[:2] == shape and out['pad_shape'][:2] == shape


def test_pad_per_channel_value_and_errors():
    out = Pad(size=(4, 4), pad_val=dict(img=(1, 2, 3)))(painted_results((2, 2), []))
    assert out['img'][3, 3].tolist() == [1, 2, 3]
    assert Pad(size=(4, 4), pad_val=7)(painted_results((2, 2), []))['img'][3, 3].tolist() == [7] * 3
    with pytest.raises(ValueError, match='larger image'):
        Pad(size=(4, 4))(painted_results((5, 2), []))
    with pytest.raises(ValueError, match='needs'):
        Pad()
    assert 'size=(4, 4)' in repr(Pad(size=(4, 4)))


def test_pack_det_inputs_fields_dtypes_and_ignored_split():
    res = painted_results((6, 8), [[0, 0, 2, 2], [3, 3, 5, 5], [6, 1, 8, 4]],
                          labels=[7, 1, 2], ignore=[False, True, False])
    res.update(img_id=3, img_path='a.jpg', scale_factor=(1.0, 1.0), flip=False,
               flip_direction=None, extra='not packed')
    res['img'][0, 1] = (1, 2, 3)
    packed = TRANSFORMS.build(dict(type='PackDetInputs'))(res)
    inputs, sample = packed['inputs'], packed['data_samples']
    assert inputs.dtype == torch.uint8 and inputs.shape == (3, 6, 8)
    assert inputs[:, 0, 1].tolist() == [1, 2, 3]  # still BGR, channel-first
    assert isinstance(sample, DetDataSample)
    gt, ignored = sample.gt_instances, sample.ignored_instances
    assert gt.bboxes.dtype == torch.float32 and gt.labels.dtype == torch.int64
    assert gt.labels.tolist() == [7, 2] and ignored.labels.tolist() == [1]
    assert gt.bboxes.tolist() == [[0, 0, 2, 2], [6, 1, 8, 4]]
    assert ignored.bboxes.tolist() == [[3, 3, 5, 5]]
    meta = sample.metainfo
    assert meta['img_id'] == 3 and meta['img_shape'] == (6, 8) and meta['flip'] is False
    assert 'extra' not in meta


def test_pack_after_flip_and_without_boxes():
    res = painted_results((4, 6), [[0, 0, 2, 2]])
    res['img'][0, 0] = 9
    flipped = TRANSFORMS.build(dict(type='RandomFlip', prob=1.0))(res)
    packed = TRANSFORMS.build(dict(type='PackDetInputs', meta_keys=('img_shape', 'flip')))(
        flipped)
    assert packed['inputs'].is_contiguous() and packed['inputs'][0, 0, 5] == 9
    assert packed['data_samples'].metainfo == {'img_shape': (4, 6), 'flip': True}
    empty = TRANSFORMS.build(dict(type='PackDetInputs'))(painted_results((4, 6), []))
    assert empty['data_samples'].gt_instances.bboxes.shape == (0, 4)
    assert empty['data_samples'].ignored_instances.labels.shape == (0,)
