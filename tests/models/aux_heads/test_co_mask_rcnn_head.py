"""CoMaskRCNNHead: shapes, hand-computed mask loss, gradients, the Faster R-CNN positives,
mask pasting and prediction."""
import math

import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData

from codetr.models.aux_heads.fcn_mask_head import mask_targets
from codetr.models.aux_heads.mask_paste import paste_masks
from codetr.registry import MODELS
from codetr.structures import BitmapMasks, DetDataSample

from .test_co_rpn_roi_head import IMG, NUM_CLASSES, STRIDES, head_cfg, pyramid

C = 32
MASK_CH = 16


def mask_head_cfg(num_classes: int | None = NUM_CLASSES, **kwargs) -> dict:
    cfg = head_cfg(**kwargs)
    if num_classes is not None:  # filled from the head's own num_classes
        cfg['roi']['bbox_head'].pop('num_classes')
    cfg['type'] = 'CoMaskRCNNHead'
    cfg['num_classes'] = num_classes
    cfg['roi']['mask_roi_extractor'] = dict(
        type='SingleRoIExtractor', roi_layer=dict(type='RoIAlign', output_size=14,
                                                  sampling_ratio=0),
        out_channels=kwargs.get('channels', C),
        featmap_strides=list(kwargs.get('strides', STRIDES))[:-1], finest_scale=56)
    cfg['roi']['mask_head'] = dict(in_channels=kwargs.get('channels', C),
                                   conv_out_channels=MASK_CH, num_convs=4)
    cfg['train_cfg']['rcnn']['mask_size'] = 28
    cfg['test_cfg']['rcnn']['mask_thr_binary'] = 0.5
    return cfg


def rect_masks(rects: list, size: int = IMG) -> BitmapMasks:
    masks = np.zeros((len(rects), size, size), np.uint8)
    for m, (x1, y1, x2, y2) in zip(masks, rects):
        m[y1:y2, x1:x2] = 1
    return BitmapMasks(masks, size, size)


def sample(boxes: list, labels: list, masks: list | None = None,
           scale: float = 1.0) -> DetDataSample:
    s = DetDataSample(metainfo=dict(img_shape=(IMG, IMG), pad_shape=(IMG, IMG),
                                    batch_input_shape=(IMG, IMG),
                                    ori_shape=(round(IMG / scale), round(IMG / scale)),
                                    scale_factor=(scale, scale)))
    s.gt_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
                                  labels=torch.tensor(labels, dtype=torch.long),
                                  masks=rect_masks(masks if masks is not None else boxes))
    return s


@pytest.fixture(scope='module')
def head():
    torch.manual_seed(0)
    return MODELS.build(mask_head_cfg())


def test_num_classes_fills_box_and_mask_parts_and_names_follow_mmdetection():
    head = MODELS.build(mask_head_cfg(num_classes=5))
    assert head.num_classes == 5 and head.roi_head.mask_head.num_classes == 5
    assert type(head).eval_kind == 'two-stage'
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes['roi_head.bbox_head.fc_cls.weight'] == (6, 64)
    for i in range(4):
        assert shapes[f'roi_head.mask_head.convs.{i}.conv.weight'] == (MASK_CH, C if i == 0
                                                                       else MASK_CH, 3, 3)
    assert shapes['roi_head.mask_head.upsample.weight'] == (MASK_CH, MASK_CH, 2, 2)
    assert shapes['roi_head.mask_head.conv_logits.weight'] == (5, MASK_CH, 1, 1)
    cfg = mask_head_cfg(num_classes=None)
    cfg['roi']['mask_head']['num_classes'] = 2
    with pytest.raises(ValueError, match='mask_head.num_classes=2'):
        MODELS.build(cfg)


def test_mask_logits_shape(head):
    boxes = [torch.tensor([[0., 0, 20, 20], [10, 10, 60, 40]]), torch.tensor([[5., 5, 9, 9]])]
    logits = head.roi_head.forward_mask(pyramid(), boxes)
    assert logits.shape == (3, NUM_CLASSES, 28, 28)


def test_mask_loss_by_hand_on_two_rois():
    """Only the GT boxes are positive (the proposal is far away); their masks are the left
    half of the box, so each target is 14 columns of ones; constant logits b per class give
    BCE = softplus(b) - b / 2 per pixel, averaged over both RoIs."""
    torch.manual_seed(0)
    head = MODELS.build(mask_head_cfg())
    logits = head.roi_head.mask_head.conv_logits
    torch.nn.init.zeros_(logits.weight)
    bias = torch.tensor([1.0, -2.0, 0.5])
    logits.bias.data.copy_(bias)
    boxes, labels = [[8, 8, 40, 40], [20, 4, 48, 60]], [0, 1]
    halves = [[8, 8, 24, 40], [20, 4, 34, 60]]
    feats = [f[:1] for f in pyramid()]
    losses, _ = head.roi_loss(feats, [torch.tensor([[60., 60, 63, 63]])],
                              [sample(boxes, labels, halves)])
    softplus = torch.nn.functional.softplus
    expected = sum(softplus(bias[k]) - bias[k] * 0.5 for k in labels) / 2
    assert losses['loss_mask'].item() == pytest.approx(expected.item(), abs=1e-5)


def test_mask_targets_cut_gt_masks_to_rois():
    masks = rect_masks([[8, 8, 24, 40]])
    targets = mask_targets([torch.tensor([[8., 8, 40, 40], [8, 8, 24, 40]])],
                           [torch.tensor([0, 0])], [masks], 28)
    assert targets.shape == (2, 28, 28)
    assert (targets[0, :, :14] == 1).all() and (targets[0, :, 14:] == 0).all()
    assert (targets[1] == 1).all()  # the RoI is the mask's own box


def test_every_parameter_gets_a_gradient_and_keys():
    torch.manual_seed(0)
    head = MODELS.build(mask_head_cfg())
    feats = pyramid(requires_grad=True)
    samples = [sample([[4, 6, 40, 50], [30, 20, 60, 44]], [0, 2]), sample([[10, 10, 34, 30]], [1])]
    losses, positives = head.loss(feats, samples)
    assert set(losses) == {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask'}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name, param in head.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert positives.coords.shape[0] == 2


def test_same_positives_and_box_losses_as_the_faster_rcnn_head():
    torch.manual_seed(0)
    mask_rcnn = MODELS.build(mask_head_cfg())
    faster = MODELS.build(head_cfg())
    faster.load_state_dict({k: v for k, v in mask_rcnn.state_dict().items()
                            if 'mask' not in k})
    feats = pyramid()
    samples = [sample([[4, 6, 40, 50], [30, 20, 60, 44]], [0, 2]), sample([[10, 10, 34, 30]], [1])]
    outputs = []
    for head in (mask_rcnn, faster):
        torch.manual_seed(3)
        outputs.append(head.loss(feats, samples))
    (mask_losses, mask_pos), (box_losses, box_pos) = outputs
    for key, value in box_losses.items():
        assert torch.equal(mask_losses[key], value), key
    for field in ('coords', 'labels', 'targets', 'label_weights', 'bbox_weights', 'feats'):
        assert torch.equal(getattr(mask_pos, field), getattr(box_pos, field)), field


def test_training_without_masks_says_how_to_load_them(head):
    s = sample([[4, 6, 40, 50]], [0])
    del s.gt_instances.masks
    with pytest.raises(ValueError, match='with_mask=True'):
        head.loss(pyramid(batch=1), [s])


@pytest.mark.parametrize('box', [[5, 7, 23, 19], [0, 0, 40, 30], [2, 3, 66, 60]])
def test_pasted_box_filling_logit_is_the_box_region(box):
    probs = torch.full((1, 28, 28), 10.0).sigmoid()
    out = paste_masks(probs, torch.tensor([box], dtype=torch.float32), (80, 120))
    expected = torch.zeros(80, 120, dtype=torch.bool)
    x1, y1, x2, y2 = box
    expected[y1:y2, x1:x2] = True
    assert out.dtype == torch.bool and out.shape == (1, 80, 120)
    assert torch.equal(out[0], expected)


def test_large_box_loses_only_its_corner_pixels_as_in_mmdetection():
    """A pixel centre half a pixel inside the box edge samples the map's first cell and the
    zero padding; on a 98 x 68 box the corner pixels get 0.643 * 0.706 = 0.454 < 0.5."""
    probs = torch.full((1, 28, 28), 10.0).sigmoid()
    out = paste_masks(probs, torch.tensor([[2., 3, 100, 71]]), (80, 120))[0]
    expected = torch.zeros(80, 120, dtype=torch.bool)
    expected[3:71, 2:100] = True
    for y, x in ((3, 2), (3, 99), (70, 2), (70, 99)):
        expected[y, x] = False
    assert torch.equal(out, expected)


def test_pasted_half_mask_and_empty_input():
    probs = torch.zeros(1, 28, 28)
    probs[:, :, :14] = 1.0
    out = paste_masks(probs, torch.tensor([[10., 0, 66, 28]]), (28, 80))[0]
    assert out[:, 10:38].all() and not out[:, 38:].any() and not out[:, :10].any()
    assert paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), (5, 6)).shape == (0, 5, 6)


def test_predict_two_stage_and_masks_for_given_boxes(head):
    head.eval()
    feats = pyramid(batch=2)
    samples = [sample([[0, 0, 1, 1]], [0], scale=2.0), sample([[0, 0, 1, 1]], [0])]
    results = head.predict(feats, samples, rescale=True)
    assert results[0].masks.shape == (len(results[0]), IMG // 2, IMG // 2)
    assert results[1].masks.shape == (len(results[1]), IMG, IMG)
    assert all(r.masks.dtype == torch.bool for r in results)
    # masks for other boxes (a DETR's): boxes come back in original pixels
    given = [InstanceData(bboxes=torch.tensor([[8., 8, 40, 40]]), labels=torch.tensor([1]),
                          scores=torch.tensor([0.9])), InstanceData(
        bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long), scores=torch.zeros(0))]
    out = head.predict_masks(feats, given, samples, rescale=True)
    assert torch.equal(out[0].bboxes, torch.tensor([[4., 4, 20, 20]]))
    assert out[0].masks.shape == (1, IMG // 2, IMG // 2)
    assert not out[0].masks[0, 21:].any() and not out[0].masks[0, :, 21:].any()  # inside box
    assert out[1].masks.shape == (0, IMG, IMG)
    head.train()


def test_mask_size_must_match_the_head():
    cfg = mask_head_cfg()
    cfg['train_cfg']['rcnn']['mask_size'] = 56
    with pytest.raises(ValueError, match='mask_size=56'):
        MODELS.build(cfg)
    assert math.isclose(2 * 14, MODELS.build(mask_head_cfg()).roi_head.mask_head.mask_size)


def test_mask_roi_features_are_the_same_on_both_roi_align_backends(head, monkeypatch):
    """The mask RoI extractor runs the multi-level CPU kernels (one call for all levels);
    its 14 x 14 features and their gradients equal torchvision's per-level roi_align."""
    from codetr.models.layers.roi_align import resolve_backend
    extractor = head.roi_head.mask_roi_extractor
    feats = [f.double().requires_grad_() for f in pyramid()][:len(extractor.featmap_strides)]
    assert resolve_backend(feats) == 'cpp'
    gen = torch.Generator().manual_seed(3)
    xy = torch.rand(12, 2, generator=gen) * 50
    rois = torch.cat([torch.randint(0, 2, (12, 1), generator=gen).double(), xy,
                      xy + 4 + torch.rand(12, 2, generator=gen) * 60], 1)
    out = extractor(feats, rois)
    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, feats, grad)
    monkeypatch.setenv('CODETR_ROI_ALIGN_BACKEND', 'torchvision')
    ref = extractor(feats, rois)
    theirs = torch.autograd.grad(ref, feats, grad)
    assert out.shape == (12, C, 14, 14)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
