"""CoFCOSHead: losses, the FCOS assignment, the positives of paper Table 1, prediction."""
import math

import pytest
import torch
from mmengine.structures import InstanceData

from codetr.models.aux_heads.co_fcos_head import (
    CoFCOSHead,
    centerness_target,
    default_regress_ranges,
    fcos_targets,
    level_points,
)
from codetr.structures import DetDataSample

C = 32  # channels: tiny, and divisible by GroupNorm's 32 groups


def make_head(**kwargs) -> CoFCOSHead:
    cfg = dict(num_classes=3, in_channels=C, feat_channels=C, strides=(8, 16))
    cfg.update(kwargs)
    head = CoFCOSHead(**cfg)
    head.init_weights()
    return head


def make_sample(boxes, labels, size=(128, 128), scale_factor=(1.0, 1.0)) -> DetDataSample:
    sample = DetDataSample(metainfo=dict(img_shape=size, ori_shape=size,
                                         scale_factor=scale_factor))
    sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
                                       labels=torch.tensor(labels, dtype=torch.long))
    return sample


def pyramid_for(size: int, strides=(8, 16), batch: int = 1) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(batch, C, size // s, size // s, requires_grad=True) for s in strides]


# Two GT boxes on a 128 px image, strides 8 and 16, ranges (-1, 64) and (64, inf):
# small [16, 16, 48, 48]: centre region +-12 px at stride 8 -> points 28, 36 (2 x 2) on level 0;
#   at stride 16 its largest distance (<= 24) is below 64, so nothing on level 1.
# big [0, 0, 128, 128]: centre region +-24 px at stride 16 -> points 56, 72 (2 x 2) on level 1
#   (largest distance 72 in (64, inf)); on level 0 its centre points 60, 68 lie 68 px from
#   the far side, above 64, so nothing on level 0.
SMALL, BIG = [16., 16., 48., 48.], [0., 0., 128., 128.]


def test_default_regress_ranges_match_fcos():
    assert default_regress_ranges((8, 16, 32, 64, 128)) == (
        (-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8))
    assert default_regress_ranges((4, 8, 16, 32, 64, 128))[:2] == ((-1, 32), (32, 64))


def test_centerness_target_by_hand():
    ltrb = torch.tensor([[1., 2., 3., 4.], [5., 5., 5., 5.]])
    expected = torch.tensor([math.sqrt(1 / 3 * 2 / 4), 1.0])
    assert torch.allclose(centerness_target(ltrb), expected)


def test_fcos_targets_centre_region_and_level():
    head = make_head()
    points, ranges, strides, counts = head._points(pyramid_for(128))
    assert counts == [256, 64]
    labels, ltrb = fcos_targets(points, ranges, strides, torch.tensor([SMALL, BIG]),
                                torch.tensor([1, 2]), 3, center_sample_radius=1.5)
    pos = (labels < 3).nonzero().squeeze(1)
    got = {(int(points[i, 0]), int(points[i, 1]), int(strides[i]), int(labels[i])) for i in pos}
    expected = {(x, y, 8, 1) for x in (28, 36) for y in (28, 36)}
    expected |= {(x, y, 16, 2) for x in (56, 72) for y in (56, 72)}
    assert got == expected
    # ltrb distances to the assigned GT, e.g. point (28, 28) to the small box
    first = [i for i in pos if points[i, 0] == 28 and points[i, 1] == 28][0]
    assert ltrb[first].tolist() == [12., 12., 20., 20.]


def test_fcos_targets_without_centre_sampling_uses_whole_box():
    points = level_points(8, 8, 8, torch.zeros(()))
    ranges = torch.tensor([[-1., 1e8]]).expand(64, 2)
    labels, _ = fcos_targets(points, ranges, torch.full((64,), 8.), torch.tensor([SMALL]),
                             torch.tensor([0]), 3, center_sample_radius=None)
    assert int((labels == 0).sum()) == 16  # points 20, 28, 36, 44 in x and y


def test_loss_keys_finite_and_every_parameter_gets_a_gradient():
    head = make_head()
    samples = [make_sample([SMALL, BIG], [1, 2]), make_sample([[40., 8., 100., 60.]], [0])]
    losses, positives = head.loss(pyramid_for(128, batch=2), samples)
    assert set(losses) == {'loss_cls', 'loss_bbox', 'loss_centerness'}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing
    assert positives.coords.shape[0] == 2 and positives.feats.shape[-1] == C


def test_positives_follow_table_1():
    head = make_head()
    pyramid = pyramid_for(128)
    _, positives = head.loss(pyramid, [make_sample([SMALL, BIG], [1, 2])])
    assert positives.num_queries == 9  # 8 positives, clamped up to the minimum 9
    is_pos = positives.bbox_weights[0] == 1
    assert int(is_pos.sum()) == 8 and positives.label_weights[0].sum() == 9
    coords, labels = positives.coords[0][is_pos], positives.labels[0][is_pos]
    centres = (coords[:, :2] + coords[:, 2:]) / 2
    sides = coords[:, 2:] - coords[:, :2]
    for centre, side, label, target in zip(centres, sides, labels,
                                           positives.targets[0][is_pos]):
        stride = 8 if label == 1 else 16
        assert side.tolist() == [8 * stride] * 2  # w = h = 8 * 2^(2+j), stride_j = 2^(2+j)
        assert target.tolist() == (SMALL if label == 1 else BIG)
        level = pyramid[0] if stride == 8 else pyramid[1]
        x, y = int(centre[0]) // stride, int(centre[1]) // stride
        box = torch.cat([centre - side / 2, centre + side / 2])
        row = (positives.coords[0] == box).all(-1).nonzero()[0, 0]
        assert torch.equal(positives.feats[0, row], level[0, :, y, x])
    assert positives.labels[0][~is_pos].tolist() == [3]  # padding negative = background


def test_no_gt_gives_zero_box_losses_and_background_positives():
    head = make_head()
    losses, positives = head.loss(pyramid_for(64), [make_sample([], [], size=(64, 64))])
    assert losses['loss_bbox'] == 0 and losses['loss_centerness'] == 0
    assert torch.isfinite(losses['loss_cls']) and losses['loss_cls'] > 0
    sum(losses.values()).backward()
    assert head.conv_reg.weight.grad is not None
    assert positives.num_queries == 9 and positives.bbox_weights.sum() == 0
    assert (positives.labels == 3).all()


def test_predict_in_original_coordinates():
    head = make_head(test_cfg=dict(max_per_img=5))
    with torch.no_grad():
        for module in head.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.zero_()
        head.conv_cls.bias.copy_(torch.tensor([-9., 4., -9.]))  # class 1 scores sigmoid(4)
        head.conv_reg.bias.fill_(1.0)  # one stride to every side: 2 * stride boxes
        head.conv_centerness.bias.zero_()  # centerness 0.5
    pyramid = [torch.zeros(1, C, 8, 8), torch.zeros(1, C, 4, 4)]
    sample = make_sample([], [], size=(64, 64), scale_factor=(2.0, 4.0))
    scaled = head.predict(pyramid, [sample], rescale=True)[0]
    raw = head.predict(pyramid, [sample], rescale=False)[0]
    assert len(raw) == 5 and (raw.labels == 1).all()
    assert torch.allclose(raw.scores, torch.full((5,), torch.sigmoid(torch.tensor(4.)) * 0.5))
    assert torch.allclose(scaled.bboxes, raw.bboxes / torch.tensor([2., 4., 2., 4.]))
    assert ((raw.bboxes[:, 2:] - raw.bboxes[:, :2]) <= 32).all()  # 2 * stride, clipped
    assert raw.bboxes.min() >= 0 and raw.bboxes.max() <= 64


def test_config_errors_say_what_to_fix():
    with pytest.raises(ValueError, match='one range per level'):
        make_head(regress_ranges=((-1, 64),))
    with pytest.raises(ValueError, match='pyramid levels'):
        make_head()(pyramid_for(64, strides=(8, 16, 32)))


def test_default_init_is_fcos():
    head = make_head()
    prior_bias = -math.log((1 - 0.01) / 0.01)
    assert torch.allclose(head.conv_cls.bias, torch.full((3,), prior_bias))
    assert head.conv_reg.bias.abs().max() == 0
    assert abs(float(head.conv_reg.weight.detach().std()) - 0.01) < 0.003
