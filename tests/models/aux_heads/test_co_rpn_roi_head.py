"""CoRPNRoIHead: losses, gradients, Table-1 positives, class-agnostic RPN, prediction."""
import math

import pytest
import torch
from mmengine.structures import InstanceData

from codetr.models.aux_heads.rpn import filter_proposals
from codetr.registry import MODELS
from codetr.structures import DetDataSample, bbox_overlaps

C, NUM_CLASSES, IMG = 32, 3, 64
STRIDES = [8, 16, 32]  # pyramid levels: L = 2 encoder levels + 1 extra


def head_cfg(rcnn_num: int = 32, max_per_img: int = 5, channels: int = C, fc: int = 64,
             num_classes: int = NUM_CLASSES, strides: tuple = STRIDES) -> dict:
    max_iou = dict(type='MaxIoUAssigner', ignore_iof_thr=-1)
    return dict(
        type='CoRPNRoIHead',
        rpn=dict(in_channels=channels, feat_channels=channels,
                 anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                       scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                       strides=strides),
                 bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4,
                                 target_stds=[1.0] * 4),
                 loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
                 loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        roi=dict(bbox_roi_extractor=dict(type='SingleRoIExtractor',
                                         roi_layer=dict(type='RoIAlign', output_size=7,
                                                        sampling_ratio=0),
                                         out_channels=channels, featmap_strides=strides[:-1],
                                         finest_scale=56),
                 bbox_head=dict(in_channels=channels, fc_out_channels=fc, roi_feat_size=7,
                                num_classes=num_classes,
                                bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                                                target_means=[0.] * 4,
                                                target_stds=[0.1, 0.1, 0.2, 0.2]),
                                reg_class_agnostic=False, reg_decoded_bbox=True,
                                loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False,
                                              loss_weight=1.0),
                                loss_bbox=dict(type='GIoULoss', loss_weight=10.0))),
        train_cfg=dict(
            rpn=dict(assigner=dict(max_iou, pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                                   match_low_quality=True),
                     sampler=dict(type='RandomSampler', num=32, pos_fraction=0.5,
                                  neg_pos_ub=-1, add_gt_as_proposals=False),
                     allowed_border=-1, pos_weight=-1),
            rpn_proposal=dict(nms_pre=50, max_per_img=20, nms=dict(type='nms', iou_threshold=0.7),
                              min_bbox_size=0),
            rcnn=dict(assigner=dict(max_iou, pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
                                    match_low_quality=False),
                      sampler=dict(type='RandomSampler', num=rcnn_num, pos_fraction=0.25,
                                   neg_pos_ub=-1, add_gt_as_proposals=True),
                      pos_weight=-1)),
        test_cfg=dict(rpn=dict(nms_pre=50, max_per_img=20, nms=dict(type='nms', iou_threshold=0.7),
                               min_bbox_size=0),
                      rcnn=dict(score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5),
                                max_per_img=max_per_img)))


def sample(boxes: list, labels: list, scale: float = 1.0) -> DetDataSample:
    s = DetDataSample(metainfo=dict(img_shape=(IMG, IMG), pad_shape=(IMG, IMG),
                                    batch_input_shape=(IMG, IMG),
                                    ori_shape=(round(IMG / scale), round(IMG / scale)),
                                    scale_factor=(scale, scale)))
    s.gt_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
                                  labels=torch.tensor(labels, dtype=torch.long))
    return s


def pyramid(batch: int = 2, requires_grad: bool = False) -> list:
    torch.manual_seed(0)
    return [torch.randn(batch, C, IMG // s, IMG // s, requires_grad=requires_grad)
            for s in STRIDES]


def zero_outputs(head) -> None:
    """All-zero logits and deltas: losses become hand-computable."""
    for layer in (head.rpn_head.rpn_cls, head.rpn_head.rpn_reg, head.roi_head.bbox_head.fc_cls,
                  head.roi_head.bbox_head.fc_reg):
        torch.nn.init.zeros_(layer.weight)


@pytest.fixture
def head():
    torch.manual_seed(0)
    return MODELS.build(head_cfg())


def test_parameter_names_follow_the_port(head):
    assert type(head).eval_kind == 'two-stage'  # selected by test_cfg.eval_module='two-stage'
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes['rpn_head.rpn_conv.weight'] == (C, C, 3, 3)
    assert shapes['rpn_head.rpn_cls.weight'] == (9, C, 1, 1)  # 3 scales x 3 ratios
    assert shapes['rpn_head.rpn_reg.weight'] == (36, C, 1, 1)
    assert shapes['roi_head.bbox_head.shared_fcs.0.weight'] == (64, C * 49)
    assert shapes['roi_head.bbox_head.shared_fcs.1.weight'] == (64, 64)
    assert shapes['roi_head.bbox_head.fc_cls.weight'] == (NUM_CLASSES + 1, 64)
    assert shapes['roi_head.bbox_head.fc_reg.weight'] == (4 * NUM_CLASSES, 64)


def test_shared_4conv_1fc_head_of_the_vit_l_config():
    """Official ViT-L RoI head: 4 GN convs (no bias) + 1 FC, class-agnostic regression;
    every part learns."""
    cfg = head_cfg()
    cfg['roi']['bbox_head'].update(type='Shared4Conv1FCBBoxHead', conv_out_channels=C,
                                   norm_cfg=dict(type='GN', num_groups=8),
                                   reg_class_agnostic=True)
    torch.manual_seed(0)
    head = MODELS.build(cfg)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()
              if k.startswith('roi_head.bbox_head.')}
    assert shapes == {
        **{f'roi_head.bbox_head.shared_convs.{i}.conv.weight': (C, C, 3, 3) for i in range(4)},
        **{f'roi_head.bbox_head.shared_convs.{i}.gn.{p}': (C,) for i in range(4)
           for p in ('weight', 'bias')},
        'roi_head.bbox_head.shared_fcs.0.weight': (64, C * 49),
        'roi_head.bbox_head.shared_fcs.0.bias': (64,),
        'roi_head.bbox_head.fc_cls.weight': (NUM_CLASSES + 1, 64),
        'roi_head.bbox_head.fc_cls.bias': (NUM_CLASSES + 1,),
        'roi_head.bbox_head.fc_reg.weight': (4, 64), 'roi_head.bbox_head.fc_reg.bias': (4,)}
    samples = [sample([[4, 6, 40, 50], [30, 20, 60, 44]], [0, 2]), sample([[10, 10, 34, 30]], [1])]
    losses, _ = head.loss(pyramid(), samples)
    sum(losses.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for n, p in head.named_parameters() if n.startswith('roi_head.')), losses


def test_official_sizes_match_the_port_state_dict(shared_dir):
    """Official Co-DINO R50 sizes: names equal the port's after ``roi_head.`` -> ``roi_head.0.``."""
    head = MODELS.build(head_cfg(channels=256, fc=1024, num_classes=80,
                                 strides=(4, 8, 16, 32, 64, 128)))
    ours = {k.replace('roi_head.', 'roi_head.0.', 1): str(tuple(v.shape))
            for k, v in head.state_dict().items()}
    rows = (shared_dir / 'reference' / 'co_dino_5scale_r50_mmdet3_state_dict.tsv').read_text()
    port = dict(line.split('\t') for line in rows.splitlines()
                if line.startswith(('rpn_head.', 'roi_head.')))
    assert ours == port


def test_loss_keys_finite_and_every_parameter_gets_a_gradient(head):
    feats = pyramid(requires_grad=True)
    samples = [sample([[4, 6, 40, 50], [30, 20, 60, 44]], [0, 2]), sample([[10, 10, 34, 30]], [1])]
    losses, positives = head.loss(feats, samples)
    assert set(losses) == {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox'}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    assert losses['loss_bbox'] > 0 and losses['loss_rpn_bbox'] > 0
    sum(losses.values()).backward()
    for name, param in head.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    # the RPN and the RoI extractor see the pyramid; the extra level only through the RPN
    assert all(f.grad.abs().sum() > 0 for f in feats)
    b, m = positives.labels.shape
    assert b == 2 and 9 <= m <= 300
    assert positives.coords.shape == positives.targets.shape == (b, m, 4)
    assert positives.feats.shape == (b, m, C)


def test_rpn_loss_is_class_agnostic_with_hand_computed_objectness(head):
    zero_outputs(head)
    feats = pyramid()
    boxes = [[4, 6, 40, 50], [30, 20, 60, 44]]
    results = []
    for labels in ([0, 0], [2, 1]):
        torch.manual_seed(1)
        losses, _ = head.loss(feats, [sample(boxes, labels), sample(boxes[:1], labels[:1])])
        results.append((losses['loss_rpn_cls'].item(), losses['loss_rpn_bbox'].item()))
    assert results[0] == results[1]
    # zero logits: every sampled anchor costs BCE = log 2 whether object or background
    assert results[0][0] == pytest.approx(math.log(2), abs=1e-6)


def test_roi_positives_follow_table_1_iou_rule(head):
    """Proposals shifted from the GT by d px: IoU 1 (d=0), 5/7 (5), 1/2 (10), 19/41 (11),
    1/5 (20), 0 (far). Positives are exactly those with IoU >= 0.5, plus the GT itself."""
    zero_outputs(head)
    # other classes' deltas would move the boxes: the loss must use class 2's (zero) deltas
    head.roi_head.bbox_head.fc_reg.bias.data.view(NUM_CLASSES, 4)[:2] = 1.0
    gt = [10., 10., 40., 40.]
    props = torch.tensor([[10 + d, 10, 40 + d, 40] for d in (5, 10, 11, 20)] + [[48, 48, 60, 60]],
                         dtype=torch.float32)
    feats = [f[:1] for f in pyramid()]
    losses, pos = head.roi_loss(feats, [props], [sample([gt], [2])])
    # zero logits: CE = log(num_classes + 1) on each of the 6 sampled RoIs (5 + GT)
    assert losses['loss_cls'].item() == pytest.approx(math.log(NUM_CLASSES + 1), abs=1e-6)
    # zero deltas: decoded box = RoI; GIoU = IoU here (enclosing box = union); avg over 6 RoIs
    assert losses['loss_bbox'].item() == pytest.approx(10 * ((1 - 5 / 7) + 0.5) / 6, abs=1e-5)
    assert pos.coords.shape == (1, 9, 4)  # 3 positives -> M = clamp(3, 9, 300) = 9
    is_pos = pos.bbox_weights[0] > 0
    iou = bbox_overlaps(pos.coords[0], torch.tensor([gt]))[:, 0]
    assert is_pos.sum() == 3
    assert (iou[is_pos] >= 0.5).all() and (pos.labels[0][is_pos] == 2).all()
    assert torch.equal(pos.targets[0][is_pos], torch.tensor([gt] * 3))
    handed_neg = (pos.label_weights[0] > 0) & ~is_pos
    assert handed_neg.sum() == 3  # all three negatives pad the positives
    assert (iou[handed_neg] < 0.5).all() and (pos.labels[0][handed_neg] == NUM_CLASSES).all()
    assert (pos.label_weights[0][6:] == 0).all()  # nothing left to pad with


def test_proposals_nms_within_levels_size_filter_and_cap():
    boxes = torch.tensor([[0., 0., 20, 20], [1, 1, 20, 20], [0, 0, 20, 20], [5, 5, 5, 30],
                          [30, 30, 50, 50]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95, 0.6])
    levels = torch.tensor([0, 0, 1, 1, 1])
    cfg = dict(nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0, max_per_img=10)
    kept = filter_proposals(boxes, scores, levels, cfg)
    # box 1 overlaps box 0 on the same level; box 2 the same box on another level survives;
    # box 3 has zero width
    assert kept.scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert torch.equal(kept.bboxes, boxes[[0, 2, 4]])
    assert len(filter_proposals(boxes, scores, levels, dict(cfg, max_per_img=2))) == 2


def test_proposals_are_detached_and_capped_per_level(head):
    feats = pyramid(requires_grad=True)
    cls_scores, bbox_preds = head.rpn_head(feats)
    props = head.rpn_head.proposals(cls_scores, bbox_preds, head.rpn_head.anchors(feats),
                                    [(IMG, IMG)] * 2, dict(nms_pre=1, max_per_img=10,
                                                           nms=dict(type='nms', iou_threshold=0.7)))
    for p in props:
        assert not p.bboxes.requires_grad
        assert 1 <= len(p) <= len(STRIDES)  # one candidate per level before NMS
        assert (p.bboxes >= 0).all() and (p.bboxes <= IMG).all()  # clipped to img_shape


def test_proposals_inside_ignored_boxes_are_not_sampled():
    cfg = head_cfg()
    cfg['train_cfg']['rcnn']['assigner']['ignore_iof_thr'] = 0.5
    head = MODELS.build(cfg)
    props = torch.tensor([[10., 10, 40, 40], [0, 0, 8, 8], [48, 48, 60, 60]])
    s = sample([[10, 10, 40, 40]], [1])
    s.ignored_instances = InstanceData(bboxes=torch.tensor([[45., 45, 64, 64]]))
    _, pos = head.roi_loss([f[:1] for f in pyramid()], [props], [s])
    used = pos.coords[0][pos.label_weights[0] > 0]
    assert len(used) == 3 and not (used == props[2]).all(1).any()


def test_proposal_scores_line_up_with_their_anchors(head):
    """One high objectness logit at level 1 (stride 16), anchor 4 (ratio 1, scale 4 * 2^(1/3)),
    row 2, column 1; zero deltas: the best proposal is that anchor, clipped to the image."""
    sizes = [IMG // s for s in STRIDES]
    cls_scores = [torch.zeros(1, 9, n, n) for n in sizes]
    cls_scores[1][0, 4, 2, 1] = 10.0
    bbox_preds = [torch.zeros(1, 36, n, n) for n in sizes]
    anchors = head.rpn_head.prior_generator.grid_priors([(n, n) for n in sizes])
    props = head.rpn_head.proposals(cls_scores, bbox_preds, anchors, [(IMG, IMG)],
                                    dict(nms_pre=5, max_per_img=3,
                                         nms=dict(type='nms', iou_threshold=0.7)))[0]
    half = 16 * 4 * 2 ** (1 / 3) / 2
    expected = torch.tensor([16 - half, 32 - half, 16 + half, 32 + half]).clamp(0, IMG)
    torch.testing.assert_close(props.bboxes[0], expected)
    assert props.scores[0].item() == pytest.approx(torch.sigmoid(torch.tensor(10.0)).item())


def test_rpn_samples_only_anchors_inside_the_padded_input(head):
    feats = pyramid(batch=1)
    valid = head.rpn_head.valid_flags(feats, (32, 32))
    # 9 anchors at the first 4x4, 2x2 and 1x1 locations of the 8x8, 4x4, 2x2 levels
    assert valid.sum() == 9 * (16 + 4 + 1)
    anchors = torch.cat(head.rpn_head.anchors(feats))
    labels, label_weights, _, target_weights, _ = head.rpn_head._targets(
        anchors, valid.nonzero().squeeze(1), torch.tensor([[2., 2., 30., 30.]]),
        head.rpn_assigner, head.rpn_sampler, None)
    assert label_weights[~valid].sum() == 0 and label_weights[valid].sum() > 0
    assert target_weights[~valid].sum() == 0 and target_weights[valid].sum() > 0
    assert (labels[target_weights[:, 0] > 0] == 0).all()  # object label, class-agnostic


def test_handed_on_rois_are_truncated_to_the_smallest_image(head):
    props = [torch.tensor([[10., 10., 40., 40.], [12, 10, 42, 40], [0, 0, 8, 8], [50, 50, 60, 60],
                           [40, 0, 60, 20]]),
             torch.tensor([[0., 0., 8., 8.], [50, 50, 60, 60]])]
    samples = [sample([[10, 10, 40, 40]], [0]), sample([[20, 20, 50, 50]], [1])]
    _, pos = head.roi_loss([f for f in pyramid()], props, samples)
    # image 1 has 2 proposals + its GT = 3 sampled RoIs, so image 0 hands on only 3 of its 6
    assert (pos.label_weights > 0).sum(1).tolist() == [3, 3]


def test_images_without_boxes(head):
    samples = [sample([], []), sample([], [])]
    losses, pos = head.loss(pyramid(), samples)
    assert losses['loss_rpn_bbox'].item() == 0 and losses['loss_bbox'].item() == 0
    assert losses['loss_rpn_cls'] > 0 and losses['loss_cls'] > 0
    assert pos.bbox_weights.sum() == 0
    assert (pos.labels[pos.label_weights > 0] == NUM_CLASSES).all()
    # one image with boxes, one without: still finite
    losses, _ = head.loss(pyramid(), [sample([[4, 6, 40, 50]], [1]), sample([], [])])
    assert all(torch.isfinite(v) for v in losses.values())


def test_predict_in_original_image_pixels():
    head = MODELS.build(head_cfg(max_per_img=5)).eval()
    feats = pyramid()
    samples = [sample([], [], scale=2.0), sample([], [], scale=2.0)]
    scaled = head.predict(feats, samples, rescale=True)
    raw = head.predict(feats, samples, rescale=False)
    assert len(scaled) == 2
    for s, r in zip(scaled, raw):
        assert 0 < len(s) <= 5 and s.bboxes.shape == (len(s), 4)
        assert s.labels.dtype == torch.long and ((s.labels >= 0) & (s.labels < NUM_CLASSES)).all()
        assert ((s.scores > 0) & (s.scores <= 1)).all()
        torch.testing.assert_close(s.bboxes, r.bboxes / 2)
        assert (s.bboxes >= 0).all() and (s.bboxes <= IMG / 2).all()


def test_config_errors_say_what_to_fix(head):
    with pytest.raises(ValueError, match='pyramid levels'):
        head.loss(pyramid()[:2], [sample([], [])] * 2)
    cfg = head_cfg()
    cfg.pop('train_cfg')
    with pytest.raises(ValueError, match='train_cfg'):
        MODELS.build(cfg).loss(pyramid(), [sample([], [])] * 2)
    cfg = head_cfg()
    cfg['train_cfg']['rpn']['allowed_border'] = 0
    with pytest.raises(ValueError, match='allowed_border'):
        MODELS.build(cfg)
    cfg = head_cfg()
    cfg['roi']['bbox_head']['type'] = 'DoubleConvFCBBoxHead'
    with pytest.raises(ValueError, match='not implemented; use one of'):
        MODELS.build(cfg)
    cfg = head_cfg()  # the port's type keys are accepted
    cfg['rpn']['type'], cfg['roi']['bbox_head']['type'] = 'RPNHead', 'Shared2FCBBoxHead'
    assert isinstance(MODELS.build(cfg), type(head))
