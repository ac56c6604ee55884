"""CoATSSHead: losses with hand-computed values, the ATSS rule, positives, prediction."""
from __future__ import annotations

import math

import pytest
import torch
from mmengine.structures import InstanceData

from codetr.registry import MODELS
from codetr.structures import DetDataSample

NUM_CLASSES = 2
WIDTH = 32


def make_sample(boxes: list[list[float]], labels: list[int], size: int = 64,
                scale: float = 1.0) -> DetDataSample:
    sample = DetDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                         batch_input_shape=(size, size),
                                         scale_factor=(scale, scale)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
                                       labels=torch.tensor(labels, dtype=torch.long))
    return sample


def build_head(strides=(8, 16, 32), octave_base_scale=8, topk=9, **kwargs):
    return MODELS.build(dict(
        type='CoATSSHead', num_classes=NUM_CLASSES, in_channels=WIDTH, feat_channels=WIDTH,
        norm_cfg=dict(type='GN', num_groups=8),
        anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], scales_per_octave=1,
                              octave_base_scale=octave_base_scale, strides=list(strides)),
        train_cfg=dict(assigner=dict(type='ATSSAssigner', topk=topk)), **kwargs))


def pyramid_for(size: int, strides, batch: int = 2) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(batch, WIDTH, size // s, size // s, requires_grad=True) for s in strides]


def test_parameter_names_follow_the_port():
    names = set(dict(build_head().named_parameters()))
    assert {'cls_convs.0.conv.weight', 'cls_convs.0.gn.weight', 'reg_convs.0.gn.bias',
            'atss_cls.weight', 'atss_reg.bias', 'atss_centerness.weight',
            'scales.2.scale'} <= names
    assert 'cls_convs.0.conv.bias' not in names  # GN follows, as in the port's state dict


def test_loss_keys_values_gradients_and_positive_shapes():
    head = build_head()
    pyramid = pyramid_for(64, (8, 16, 32))
    samples = [make_sample([[4, 6, 40, 50], [30, 20, 60, 36]], [0, 1]),
               make_sample([[10, 10, 30, 28]], [1])]
    losses, positives = head.loss(pyramid, samples)

    assert set(losses) == {'loss_cls', 'loss_bbox', 'loss_centerness'}
    assert all(v.dim() == 0 and torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    params = dict(head.named_parameters())
    assert [n for n, p in params.items() if p.grad is None] == []
    # a level's Scale only moves through its own positives' boxes
    assert [n for n, p in params.items() if not p.grad.any() and 'scales' not in n] == []
    assert params['scales.0.scale'].grad != 0

    num_pos = (positives.bbox_weights > 0).sum(1)
    m = min(max(int(num_pos.max()), 9), 300)
    num_anchors = 8 * 8 + 4 * 4 + 2 * 2
    assert positives.coords.shape == (2, m, 4) and positives.targets.shape == (2, m, 4)
    assert positives.labels.shape == (2, m) and positives.feats.shape == (2, m, WIDTH)
    assert 0 < int(num_pos.max()) <= num_anchors
    # positives carry a GT label, their GT box, and the pyramid feature of their anchor
    pos = positives.bbox_weights > 0
    assert (positives.labels[pos] < NUM_CLASSES).all()
    gts = samples[0].gt_instances.bboxes
    first = positives.targets[0][pos[0]]
    assert ((first[:, None] == gts[None]).all(-1).any(-1)).all()
    anchors = torch.cat(head.prior_generator.grid_priors([(8, 8), (4, 4), (2, 2)]))
    flat = torch.cat([p.flatten(2).transpose(1, 2) for p in pyramid], 1)
    idx = (positives.coords[0][:, None] == anchors[None]).all(-1).float().argmax(1)
    assert torch.equal(positives.feats[0], flat[0][idx])


def test_image_without_boxes_trains_background_only():
    head = build_head()
    pyramid = pyramid_for(64, (8, 16, 32), batch=1)
    losses, positives = head.loss(pyramid, [make_sample([], [])])
    assert losses['loss_cls'] > 0
    assert losses['loss_bbox'] == 0 and losses['loss_centerness'] == 0
    sum(losses.values()).backward()  # the zero losses still reach the box branch
    assert head.atss_reg.weight.grad is not None
    assert positives.coords.shape == (1, 9, 4)
    assert (positives.labels == NUM_CLASSES).all()
    assert (positives.bbox_weights == 0).all() and (positives.label_weights == 1).all()


def test_atss_rule_and_losses_on_a_hand_made_box():
    """32 px image, strides 8 / 16, 16 / 32 px anchors, top-3 per level, one GT box.

    GT (6, 6, 22, 20), centre (14, 13). Nearest anchor centres and IoUs:
      stride 8:  (16,16) 168/312 = .5385, (16,8) 140/340 = .4118, (8,16) 120/360 = .3333
      stride 16: (16,16) 224/1024 = .2188, (16,0) 160/1088 = .1471, (0,16) 140/1108 = .1264
    mean .2960 + std .1616 = .4575: only the stride-8 anchor (8, 8, 24, 24) at (16, 16),
    whose centre lies in the box, is positive (flat index 2 * 4 + 2 = 10).
    """
    head = build_head(strides=(8, 16), octave_base_scale=2, topk=3)
    for layer in (head.atss_cls, head.atss_reg, head.atss_centerness):
        torch.nn.init.zeros_(layer.weight)  # logits = biases, deltas = 0
    gt = [6.0, 6.0, 22.0, 20.0]
    sample = make_sample([gt], [1], size=32)
    pyramid = pyramid_for(32, (8, 16), batch=1)
    losses, positives = head.loss(pyramid, [sample])

    assert positives.bbox_weights.sum() == 1
    assert positives.coords[0, 0].tolist() == [8.0, 8.0, 24.0, 24.0]
    assert positives.targets[0, 0].tolist() == gt and positives.labels[0, 0] == 1
    assert (positives.labels[0, 1:] == NUM_CLASSES).all()

    # centerness target: l, r = 10, 6; t, b = 10, 4
    center = math.sqrt(6 / 10 * 4 / 10)
    # deltas 0 decode to the anchor; GIoU = 168/312 - (18*18 - 312) / (18*18)
    giou = 168 / 312 - (324 - 312) / 324
    # GIoU weight 2, weighted by the centerness target, divided by max(sum of targets, 1)
    assert losses['loss_bbox'].item() == pytest.approx(2 * center * (1 - giou), rel=1e-5)
    # centerness logit 0: BCE = log 2 whatever the target; one positive
    assert losses['loss_centerness'].item() == pytest.approx(math.log(2), rel=1e-5)
    # every class probability is the prior 0.01; 20 anchors x 2 classes, one positive pair
    p, alpha = 0.01, 0.25
    neg = -(1 - alpha) * p ** 2 * math.log(1 - p)
    pos = -alpha * (1 - p) ** 2 * math.log(p)
    assert losses['loss_cls'].item() == pytest.approx(39 * neg + pos, rel=1e-4)


def test_predict_caps_detections_and_rescales():
    head = build_head(test_cfg=dict(score_thr=0.0, max_per_img=5, nms_pre=50))
    pyramid = pyramid_for(64, (8, 16, 32), batch=1)
    with torch.no_grad():
        plain = head.predict(pyramid, [make_sample([], [])], rescale=False)[0]
        rescaled = head.predict(pyramid, [make_sample([], [], scale=0.5)], rescale=True)[0]
    assert len(plain) == 5 and plain.bboxes.shape == (5, 4)
    assert (plain.scores[:-1] >= plain.scores[1:]).all()
    assert (plain.bboxes >= 0).all() and (plain.bboxes <= 64).all()  # clipped to img_shape
    assert torch.allclose(rescaled.bboxes, plain.bboxes * 2)
    assert torch.equal(rescaled.labels, plain.labels)


def test_bad_pyramid_depth_is_refused():
    head = build_head()
    with pytest.raises(ValueError, match='pyramid levels'):
        head.loss(pyramid_for(64, (8, 16)), [make_sample([], [])])


def test_default_head_matches_the_port_state_dict(shared_dir):
    """Co-DINO R50's ATSS head (``bbox_head.0.*`` in the port): same names and shapes."""
    rows = (shared_dir / 'reference' / 'co_dino_5scale_r50_mmdet3_state_dict.tsv').read_text()
    prefix = 'bbox_head.0.'
    port = {}
    for line in rows.splitlines():
        key, _, shape = line.partition('\t')
        if key.startswith(prefix):
            port[key[len(prefix):]] = shape
    head = MODELS.build(dict(type='CoATSSHead', num_classes=80))
    ours = {k: str(tuple(v.shape)) for k, v in head.state_dict().items()}
    assert ours == port
