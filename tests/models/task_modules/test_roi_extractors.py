"""SingleRoIExtractor: FPN level mapping by hand, pooling values, batch index, gradients."""
import pytest
import torch

from codetr.models.task_modules import RoIAlign, SingleRoIExtractor
from codetr.registry import MODELS

CO_DETR_EXTRACTOR = dict(type='SingleRoIExtractor',
                         roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
                         out_channels=4, featmap_strides=[4, 8, 16, 32], finest_scale=56)


def _rois(sides, batch_idx=0, x0=2.):
    return torch.tensor([[batch_idx, x0, x0, x0 + s, x0 + s] for s in sides])


def test_map_roi_levels_by_hand():
    extractor = MODELS.build(CO_DETR_EXTRACTOR)
    # level = floor(log2(side / 56)) clamped to [0, 3]: below 112 level 0, then per doubling
    rois = _rois([20, 111, 112, 223, 224, 447, 448, 2000])
    assert extractor.map_roi_levels(rois, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert extractor.map_roi_levels(rois, 2).tolist() == [0, 0, 1, 1, 1, 1, 1, 1]


def test_constant_maps_give_the_constant_of_the_chosen_level():
    extractor = MODELS.build(CO_DETR_EXTRACTOR)
    # level l of image b is filled with 10 * b + l + 1; a 5th, coarser level is ignored
    feats = [torch.stack([torch.full((4, 64 // 2 ** lvl, 64 // 2 ** lvl), 10. * b + lvl + 1)
                          for b in range(2)]) for lvl in range(5)]
    rois = torch.cat([_rois([40, 150], batch_idx=0), _rois([60, 200], batch_idx=1)])
    out = extractor(feats, rois)
    assert out.shape == (4, 4, 7, 7)
    expected = torch.tensor([1., 2., 11., 12.])  # levels 0, 1, 0, 1 of images 0, 0, 1, 1
    torch.testing.assert_close(out, expected[:, None, None, None].expand(4, 4, 7, 7))


def test_aligned_roi_align_on_a_ramp():
    # feature value = column index; with aligned=True image x maps to x / stride - 0.5
    ramp = torch.arange(8.).expand(1, 1, 8, 8)
    layer = RoIAlign(output_size=2, spatial_scale=1 / 4, sampling_ratio=0)
    out = layer(ramp, torch.tensor([[0., 0., 0., 16., 16.]]))
    # bin centres at image x = 4 and 12 -> feature x = 0.5 and 2.5
    torch.testing.assert_close(out[0, 0], torch.tensor([[0.5, 2.5], [0.5, 2.5]]))
    legacy = RoIAlign(output_size=2, spatial_scale=1 / 4, aligned=False)
    torch.testing.assert_close(legacy(ramp, torch.tensor([[0., 0., 0., 16., 16.]]))[0, 0],
                               torch.tensor([[1., 3.], [1., 3.]]))


def test_every_level_gets_a_gradient_and_scale_factor():
    extractor = SingleRoIExtractor(dict(type='RoIAlign', output_size=3), out_channels=2,
                                   featmap_strides=[4, 8])
    feats = [torch.ones(1, 2, 16, 16, requires_grad=True),
             torch.ones(1, 2, 8, 8, requires_grad=True)]
    extractor(feats, _rois([30])).sum().backward()
    assert feats[0].grad.abs().sum() > 0
    assert feats[1].grad is not None  # unused level still in the graph (zero gradient)
    # scaling the RoI by 2 about its centre keeps its level but pools a wider window
    ramp = torch.arange(16.).expand(1, 2, 16, 16).contiguous()
    wide = extractor([ramp, ramp[..., ::2, ::2]], _rois([16], x0=16.), roi_scale_factor=2.)
    narrow = extractor([ramp, ramp[..., ::2, ::2]], _rois([16], x0=16.))
    assert float(wide[0, 0, 0, 0]) < float(narrow[0, 0, 0, 0])


def test_bad_configs_and_inputs():
    with pytest.raises(ValueError, match='roi_layer type'):
        SingleRoIExtractor(dict(type='RoIPool', output_size=7), 4, [4])
    with pytest.raises(ValueError, match='pool_mode'):
        RoIAlign(7, pool_mode='max')
    extractor = MODELS.build(CO_DETR_EXTRACTOR)
    with pytest.raises(ValueError, match='4 featmap_strides'):
        extractor([torch.zeros(1, 4, 8, 8)], _rois([10]))
