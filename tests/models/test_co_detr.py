"""CoDETR wiring: loss / predict / tensor modes with a tiny CoDINOHead, and its config checks."""
from __future__ import annotations

import copy

import pytest
import torch
from mmengine.structures import InstanceData

from codetr.registry import MODELS
from codetr.structures import DetDataSample

NUM_CLASSES = 4
EMBED = 32
# Last layer, earlier layer, encoder proposals and denoising queries (MMDetection's names).
LOSS_KEYS = tuple(f'{prefix}loss_{name}' for prefix in ('', 'd0.', 'enc_', 'dn_', 'd0.dn_')
                  for name in ('cls', 'bbox', 'iou'))



def tiny_head_cfg(num_classes: int = NUM_CLASSES) -> dict:
    """A CoDINOHead over 2 levels with embed 32, 2 heads, one encoder and decoder layer."""
    attn = dict(embed_dims=EMBED, num_heads=2, num_levels=2, num_points=2, dropout=0.0)
    ffn = dict(embed_dims=EMBED, feedforward_channels=64, ffn_drop=0.0)
    return dict(
        type='CoDINOHead', num_classes=num_classes, embed_dims=EMBED, num_queries=10,
        transformer=dict(
            type='CoDinoTransformer', num_feature_levels=2,
            encoder=dict(type='DeformableDetrTransformerEncoder', num_layers=1,
                         layer_cfg=dict(self_attn_cfg=attn, ffn_cfg=ffn)),
            decoder=dict(type='DinoTransformerDecoder', num_layers=2, layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=EMBED, num_heads=2, dropout=0.0),
                cross_attn_cfg=attn, ffn_cfg=ffn))),
        positional_encoding=dict(num_feats=EMBED // 2, temperature=20, normalize=True),
        dn_cfg=dict(label_noise_scale=0.5, box_noise_scale=1.0,
                    group_cfg=dict(dynamic=True, num_groups=None, num_dn_queries=6)))


def tiny_model_cfg(**overrides) -> dict:
    cfg = dict(
        type='CoDETR',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
        backbone=dict(type='ResNet', depth=18, out_indices=(2, 3), frozen_stages=-1,
                      norm_eval=False),
        neck=dict(type='ChannelMapper', in_channels=[256, 512], kernel_size=1,
                  out_channels=EMBED, norm_cfg=dict(type='GN', num_groups=8), num_outs=2),
        query_head=tiny_head_cfg(),
        train_cfg=dict(query_head=dict(assigner=dict(type='HungarianAssigner'))),
        test_cfg=dict(query_head=dict(max_per_img=7)))
    cfg.update(overrides)
    return cfg


def make_batch(sizes: list[tuple[int, int]], scale: float = 0.5, num_gt: int = 2,
               seed: int = 0) -> dict:
    """Raw batch as the dataloader gives it: uint8 (3, h, w) images and samples whose boxes
    are in network-input pixels, with ``scale_factor`` = input / original size."""
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for i, (h, w) in enumerate(sizes):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        xy = torch.rand(num_gt, 2, generator=g) * torch.tensor([w / 2, h / 2])
        wh = 8 + torch.rand(num_gt, 2, generator=g) * torch.tensor([w / 3, h / 3])
        sample = DetDataSample(metainfo=dict(
            img_id=i, img_shape=(h, w), ori_shape=(round(h / scale), round(w / scale)),
            scale_factor=(scale, scale)))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], 1),
            labels=torch.randint(0, NUM_CLASSES, (num_gt,), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return MODELS.build(tiny_model_cfg())


def test_loss_keys_and_every_parameter_gets_a_gradient(model):
    model.train()
    data = model.data_preprocessor(make_batch([(64, 64), (48, 56)]), training=True)
    losses = model(**data, mode='loss')
    for key in LOSS_KEYS:
        assert key in losses, f'{key} missing from {sorted(losses)}'
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total) and total > 0
    model.zero_grad()
    total.backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, f'parameters without a finite gradient: {missing}'


def test_predict_returns_boxes_in_original_coordinates(model):
    model.eval()
    data = model.data_preprocessor(make_batch([(64, 64), (48, 56)], scale=0.5), training=False)
    with torch.no_grad():
        samples = model(**data, mode='predict')
    assert len(samples) == 2
    for sample in samples:
        pred = sample.pred_instances
        assert len(pred) == 7  # test_cfg.query_head.max_per_img, with no score threshold
        assert pred.bboxes.shape == (7, 4) and pred.scores.shape == (7,)
        assert pred.labels.min() >= 0 and pred.labels.max() < NUM_CLASSES
        oh, ow = sample.ori_shape
        # Boxes are clamped to the input image, then divided by scale 0.5: they must fill
        # up to the original size (twice the input), never beyond it.
        assert pred.bboxes[:, 0::2].max() <= ow + 1e-4 and pred.bboxes[:, 1::2].max() <= oh + 1e-4
        assert pred.bboxes.min() >= 0


def test_predict_rescale_false_stays_in_input_pixels(model):
    model.eval()
    data = model.data_preprocessor(make_batch([(64, 64)], scale=0.5), training=False)
    with torch.no_grad():
        scaled = model.predict(data['inputs'], copy.deepcopy(data['data_samples']))
        unscaled = model.predict(data['inputs'], data['data_samples'], rescale=False)
    torch.testing.assert_close(scaled[0].pred_instances.bboxes,
                               unscaled[0].pred_instances.bboxes * 2)


def test_tensor_mode_gives_head_outputs(model):
    model.eval()
    data = model.data_preprocessor(make_batch([(64, 64), (48, 56)]), training=False)
    with torch.no_grad():
        cls_scores, bbox_preds = model(**data, mode='tensor')
    # (decoder layers, B, queries, classes) logits and (..., 4) normalised cxcywh boxes
    assert cls_scores.shape == (2, 2, 10, NUM_CLASSES) and bbox_preds.shape == (2, 2, 10, 4)
    assert torch.isfinite(cls_scores).all()
    assert bbox_preds.min() >= 0 and bbox_preds.max() <= 1


def test_label_outside_num_classes_raises_with_the_fix():
    model = MODELS.build(tiny_model_cfg())
    batch = make_batch([(64, 64)])
    batch['data_samples'][0].gt_instances.labels[0] = 12
    data = model.data_preprocessor(batch, training=True)
    with pytest.raises(ValueError, match='label 12 >= num_classes 4: set '
                                         'model.query_head.num_classes'):
        model(**data, mode='loss')


def test_aux_heads_are_not_supported_yet():
    cfg = tiny_model_cfg(aux_heads=dict(atss=dict(type='CoATSSHead')))
    with pytest.raises(NotImplementedError, match=r"aux_heads \['atss'\]"):
        MODELS.build(cfg)


def test_empty_aux_heads_is_the_plain_baseline():
    model = MODELS.build(tiny_model_cfg(aux_heads=dict(), adapter=dict(type='Unbuilt')))
    assert len(model.aux_heads) == 0 and model.adapter is None


@pytest.mark.parametrize('eval_module', ['one-stage', 'two-stage'])
def test_aux_eval_modules_are_not_supported_yet(eval_module):
    cfg = tiny_model_cfg(test_cfg=dict(eval_module=eval_module))
    with pytest.raises(NotImplementedError, match=eval_module):
        MODELS.build(cfg)


def test_unknown_eval_module_is_rejected():
    with pytest.raises(ValueError, match="must be one of"):
        MODELS.build(tiny_model_cfg(test_cfg=dict(eval_module='rpn')))


def test_branch_cfgs_reach_the_head_and_conflicts_raise():
    model = MODELS.build(tiny_model_cfg())
    assert model.query_head.test_cfg['max_per_img'] == 7
    cfg = tiny_model_cfg()
    cfg['query_head']['test_cfg'] = dict(max_per_img=3)
    with pytest.raises(ValueError, match='model.query_head.test_cfg and model.test_cfg'):
        MODELS.build(cfg)


def test_loss_with_an_image_without_boxes(model):
    model.train()
    batch = make_batch([(64, 64), (48, 56)])
    empty = batch['data_samples'][1].gt_instances
    batch['data_samples'][1].gt_instances = empty[empty.labels < 0]  # no boxes left
    data = model.data_preprocessor(batch, training=True)
    losses = model(**data, mode='loss')
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total) and losses['loss_cls'] > 0
