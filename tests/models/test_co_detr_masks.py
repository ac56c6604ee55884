"""CoDETR with a Mask R-CNN aux head: mask losses in training, masks for the DETR's boxes in
the same pass (test_cfg.mask_branch) and through the two-stage branch."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from codetr.registry import MODELS
from codetr.structures import BitmapMasks

from .aux_heads.test_co_mask_rcnn_head import mask_head_cfg
from .test_co_detr import EMBED, NUM_CLASSES, make_batch, tiny_model_cfg

STRIDES = (16, 32, 64)  # the tiny model's two levels + the adapter's extra one


def mask_model_cfg(**test_cfg) -> dict:
    head = mask_head_cfg(num_classes=NUM_CLASSES, channels=EMBED, strides=STRIDES)
    cfg = tiny_model_cfg(adapter=dict(type='MultiScaleAdapter', num_extra=1),
                         aux_heads=dict(rcnn=head))
    cfg['test_cfg'] = dict(cfg['test_cfg'], **test_cfg)
    return cfg


def with_masks(batch: dict) -> dict:
    """Rectangle masks of each GT box, at the input size."""
    for img, sample in zip(batch['inputs'], batch['data_samples']):
        h, w = img.shape[-2:]
        masks = np.zeros((len(sample.gt_instances), h, w), np.uint8)
        for m, (x1, y1, x2, y2) in zip(masks, sample.gt_instances.bboxes.int().tolist()):
            m[y1:y2, x1:x2] = 1
        sample.gt_instances.masks = BitmapMasks(masks, h, w)
    return batch


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return MODELS.build(mask_model_cfg(mask_branch='rcnn'))


def test_mask_loss_is_an_aux_loss_and_reaches_the_mask_branch(model):
    model.train()
    data = model.data_preprocessor(with_masks(make_batch([(64, 64), (48, 56)])), training=True)
    losses = model(**data, mode='loss')
    assert 'rcnn.loss_mask' in losses and torch.isfinite(losses['rcnn.loss_mask'])
    total, _ = model.parse_losses(losses)
    model.zero_grad()
    total.backward()
    mask_params = [(n, p) for n, p in model.named_parameters() if 'mask' in n]
    assert len(mask_params) == 2 * (4 + 2)  # 4 convs, upsample, conv_logits
    for name, param in mask_params:
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_detr_boxes_get_masks_in_one_pass(model, monkeypatch):
    model.eval()
    data = model.data_preprocessor(make_batch([(64, 64), (48, 56)], scale=0.5), training=False)
    calls = []
    encode = model.query_head.encode
    monkeypatch.setattr(model.query_head, 'encode',
                        lambda *a, **k: calls.append(1) or encode(*a, **k))
    with torch.no_grad():
        samples = model.predict(data['inputs'], copy.deepcopy(data['data_samples']))
        assert len(calls) == 1  # one encoder pass gives the boxes and the mask features
        model.mask_branch = None
        plain = model.predict(data['inputs'], copy.deepcopy(data['data_samples']))
        model.mask_branch = 'rcnn'
    for sample, ref in zip(samples, plain):
        pred = sample.pred_instances
        assert len(pred) == 7 and pred.masks.dtype == torch.bool
        assert pred.masks.shape == (7, *sample.ori_shape)
        torch.testing.assert_close(pred.bboxes, ref.pred_instances.bboxes)
        assert torch.equal(pred.scores, ref.pred_instances.scores)
        assert 'masks' not in ref.pred_instances
        for box, mask in zip(pred.bboxes, pred.masks):  # no mask pixel outside its box
            x1, y1, x2, y2 = box.tolist()
            ys, xs = torch.nonzero(mask, as_tuple=True)
            if len(xs):
                assert xs.min() >= int(x1) - 1 and xs.max() <= x2 + 1
                assert ys.min() >= int(y1) - 1 and ys.max() <= y2 + 1


def test_two_stage_evaluation_predicts_the_roi_heads_masks():
    torch.manual_seed(0)
    model = MODELS.build(mask_model_cfg(eval_module='two-stage'))
    model.eval()
    # 128 px: the adapter's stride-64 level must hold more than one value per GN group
    data = model.data_preprocessor(make_batch([(128, 128)], scale=0.5), training=False)
    with torch.no_grad():
        sample = model.predict(data['inputs'], data['data_samples'])[0]
    pred = sample.pred_instances
    assert 0 < len(pred) <= 5  # test_cfg.rcnn.rcnn.max_per_img of the head config
    assert pred.masks.shape == (len(pred), *sample.ori_shape)


def test_mask_branch_must_name_a_mask_head():
    with pytest.raises(ValueError, match='mask_branch'):
        MODELS.build(mask_model_cfg(mask_branch='atss'))
    assert MODELS.build(mask_model_cfg()).aux_heads['rcnn'].num_classes == NUM_CLASSES
