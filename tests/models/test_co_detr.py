"""CoDETR wiring: loss / predict / tensor modes with a tiny CoDINOHead, and its config checks."""
from __future__ import annotations

import copy
import math

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
                                         'model.num_classes'):
        model(**data, mode='loss')


def test_empty_aux_heads_is_the_plain_baseline():
    model = MODELS.build(tiny_model_cfg(aux_heads=dict(), adapter=dict(type='Unbuilt')))
    assert len(model.aux_heads) == 0 and model.adapter is None
    assert len(model.query_head.pos_query_generators) == 0


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


# ----------------------------------------------------------------- aux heads (K > 0)
def stub_head(kind: str = 'one', **kwargs) -> dict:
    return dict(type=f'Stub{"OneStage" if kind == "one" else "TwoStage"}AuxHead',
                num_classes=NUM_CLASSES, in_channels=EMBED, num_levels=3, **kwargs)


def aux_model_cfg(aux_heads: dict | None = None, num_decoder_layers: int = 2, **overrides):
    head = tiny_head_cfg()
    head['transformer']['decoder']['num_layers'] = num_decoder_layers
    cfg = tiny_model_cfg(
        query_head=head,
        adapter=dict(type='MultiScaleAdapter', num_extra=1, norm_cfg=dict(type='GN', num_groups=8)),
        aux_heads=aux_heads if aux_heads is not None else dict(rcnn=stub_head('two'),
                                                               atss=stub_head('one')))
    cfg.update(overrides)
    return cfg


def build(cfg: dict, seed: int = 0):
    torch.manual_seed(seed)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def seeded_losses(model, data, seed: int = 3) -> dict:
    torch.manual_seed(seed)  # denoising noise and positive subsampling draw from torch
    return model(**copy.deepcopy(data), mode='loss')


@pytest.fixture(scope='module')
def aux_model():
    from tests.models.co_modules import stub_aux_heads  # noqa: F401  (registers the stubs)
    return build(aux_model_cfg())


@pytest.fixture(scope='module')
def aux_batch(aux_model):
    return aux_model.data_preprocessor(make_batch([(64, 64), (48, 56)]), training=True)


def test_k2_loss_keys_and_every_parameter_gets_a_gradient(aux_model, aux_batch):
    aux_model.train()
    losses = seeded_losses(aux_model, aux_batch)
    for name in ('rcnn', 'atss'):
        for key in ('loss_cls', 'loss_bbox'):
            assert f'{name}.{key}' in losses
        for key in ('loss_cls', 'loss_bbox', 'loss_iou', 'd0.loss_cls', 'd0.loss_iou'):
            assert f'{name}.pos.{key}' in losses
    assert all('loss' in key for key in losses)
    total, _ = aux_model.parse_losses(losses)
    aux_model.zero_grad()
    total.backward()
    missing = [n for n, p in aux_model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, f'parameters without a finite gradient: {missing}'
    # The collaborative parts must actually learn (some zero-initialised layers of the rest
    # block their inputs' gradients at step 0).
    collaborative = ('aux_heads.', 'adapter.', 'query_head.pos_query_generators.')
    zero = [n for n, p in aux_model.named_parameters()
            if n.startswith(collaborative) and not p.grad.any()]
    assert not zero, f'collaborative parameters with a zero gradient: {zero}'
    assert any(n.startswith('query_head.pos_query_generators.rcnn') for n, _ in
               aux_model.named_parameters())


def test_lambda_rules_scale_each_branch(aux_model, aux_batch):
    aux_model.train()
    base = seeded_losses(aux_model, aux_batch)
    # Aux losses are the heads' raw losses times lambda_2 (2) * 2 decoder layers.
    for name in ('rcnn', 'atss'):
        raw = aux_model.aux_heads[name].last_raw
        torch.testing.assert_close(base[f'{name}.loss_cls'].detach(), raw['loss_cls'] * 4)
    other = build(aux_model_cfg(lambda_1=0.5, lambda_2=3.0))
    other.load_state_dict(aux_model.state_dict())
    other.train()
    scaled = seeded_losses(other, aux_batch)
    assert scaled.keys() == base.keys()
    for key, value in base.items():
        factor = 0.5 if '.pos.' in key else 1.5 if key.startswith(('rcnn.', 'atss.')) else 1.0
        torch.testing.assert_close(scaled[key], value * factor, msg=key)


def test_total_loss_is_the_official_formula_with_six_decoder_layers():
    from tests.models.co_modules import stub_aux_heads  # noqa: F401
    model = build(aux_model_cfg(num_decoder_layers=6))
    model.train()
    data = model.data_preprocessor(make_batch([(64, 64)]), training=True)
    losses = seeded_losses(model, data)
    total, _ = model.parse_losses(losses)
    main = sum(v for k, v in losses.items() if not k.startswith(('rcnn.', 'atss.')))
    positive = sum(v for k, v in losses.items() if '.pos.' in k)
    raw_aux = sum(sum(head.last_raw.values()) for head in model.aux_heads.values())
    # The official configs: aux loss weights x 12 (= 6 layers x lambda_2 2), positive
    # queries x lambda_1 1, on all 6 decoder layers (loss_* and d0..d4).
    assert sum('.pos.d4.' in k for k in losses) == 2 * 3
    torch.testing.assert_close(total.detach(), (main + 12 * raw_aux + positive).detach())


def test_aux_heads_do_not_run_at_prediction_and_their_weights_are_not_needed(aux_model):
    aux_model.eval()
    data = aux_model.data_preprocessor(make_batch([(64, 64), (48, 56)]), training=False)
    for head in aux_model.aux_heads.values():
        head.explode = True
    try:
        with torch.no_grad():
            full = aux_model.predict(data['inputs'], copy.deepcopy(data['data_samples']))
    finally:
        for head in aux_model.aux_heads.values():
            head.explode = False
    plain = build(tiny_model_cfg(query_head=aux_model_cfg()['query_head']))
    kept = {k: v for k, v in aux_model.state_dict().items()
            if not k.startswith(('aux_heads.', 'adapter.', 'query_head.pos_query_generators.'))}
    plain.load_state_dict(kept)  # strict: nothing else is missing
    plain.eval()
    with torch.no_grad():
        alone = plain.predict(data['inputs'], copy.deepcopy(data['data_samples']))
    for a, b in zip(full, alone):
        torch.testing.assert_close(a.pred_instances.bboxes, b.pred_instances.bboxes)
        torch.testing.assert_close(a.pred_instances.scores, b.pred_instances.scores)


@pytest.mark.parametrize('aux_heads', [
    dict(atss=stub_head('one')),                           # K = 1, rcnn removed
    dict(atss=stub_head('two'), rcnn=stub_head('one')),    # kinds swapped, order swapped
])
def test_edited_aux_heads_train_a_step(aux_heads):
    from tests.models.co_modules import stub_aux_heads  # noqa: F401
    model = build(aux_model_cfg(aux_heads=aux_heads))
    model.train()
    assert list(model.aux_heads) == list(aux_heads)
    assert list(model.query_head.pos_query_generators) == list(aux_heads)
    data = model.data_preprocessor(make_batch([(64, 64), (48, 56)]), training=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = model(**data, mode='loss')
    assert {k.split('.')[0] for k in losses if '.' in k and not k.startswith('d')} == set(
        aux_heads)
    total, _ = model.parse_losses(losses)
    before = model.adapter.downsample[0][0].weight.detach().clone()
    total.backward()
    optimizer.step()
    assert torch.isfinite(total)
    assert not torch.equal(before, model.adapter.downsample[0][0].weight)


def test_eval_module_selects_an_aux_head_and_skips_the_decoder(monkeypatch):
    from tests.models.co_modules import stub_aux_heads

    heads = dict(rcnn=stub_head('two'), a=stub_head('one'), b=stub_head('one'))
    model = build(aux_model_cfg(aux_heads=heads, test_cfg=dict(eval_module='one-stage')))
    assert model.eval_head == 'a'  # the first one-stage head
    assert build(aux_model_cfg(aux_heads=heads, test_cfg=dict(
        eval_module='two-stage'))).eval_head == 'rcnn'
    assert build(aux_model_cfg(aux_heads=heads, test_cfg=dict(
        eval_module='one-stage', eval_head='b'))).eval_head == 'b'

    def no_decoder(*args, **kwargs):
        raise AssertionError('the decoder must not run for aux evaluation')

    monkeypatch.setattr(model.query_head.transformer, 'decode', no_decoder)
    model.eval()
    data = model.data_preprocessor(make_batch([(64, 64)], scale=0.5), training=False)
    with torch.no_grad():
        sample = model.predict(data['inputs'], data['data_samples'])[0]
    # The stub's fixed box divided by scale_factor 0.5.
    torch.testing.assert_close(sample.pred_instances.bboxes, stub_aux_heads.PREDICTED_BOX * 2)


@pytest.mark.parametrize('test_cfg, match', [
    (dict(eval_module='two-stage'), "needs an aux head of that kind.*'atss': 'one-stage'"),
    (dict(eval_module='one-stage', eval_head='rpn'), 'needs an aux head of that kind'),
])
def test_eval_module_without_a_head_of_that_kind_raises(test_cfg, match):
    from tests.models.co_modules import stub_aux_heads  # noqa: F401
    with pytest.raises(ValueError, match=match):
        MODELS.build(aux_model_cfg(aux_heads=dict(atss=stub_head('one')), test_cfg=test_cfg))
    with pytest.raises(ValueError, match='needs an aux head'):
        MODELS.build(tiny_model_cfg(test_cfg=dict(eval_module='one-stage')))


@pytest.mark.parametrize('change, match', [
    (dict(adapter=None), 'needs model.adapter'),
    (dict(aux_heads=dict(query_head=stub_head())), 'is not allowed'),
    (dict(aux_heads=dict(**{'a.b': stub_head()})), 'is not allowed'),
])
def test_aux_config_errors_say_what_to_fix(change, match):
    from tests.models.co_modules import stub_aux_heads  # noqa: F401
    with pytest.raises(ValueError, match=match):
        MODELS.build(aux_model_cfg(**change))
    cfg = aux_model_cfg()
    cfg['query_head']['aux_head_names'] = ('other',)
    with pytest.raises(ValueError, match='aux_head_names is set by CoDETR'):
        MODELS.build(cfg)


def test_model_init_weights_reaches_each_aux_heads_own_init():
    """CoFCOSHead initialises through its init_cfg (normal(0, 0.01) convs, class bias for a
    0.01 prior): the detector's init_weights must reach it inside ``aux_heads``."""
    fcos = dict(type='CoFCOSHead', num_classes=NUM_CLASSES, in_channels=EMBED,
                feat_channels=EMBED, stacked_convs=1, strides=(8, 16, 32),
                norm_cfg=dict(type='GN', num_groups=8))
    model = build(aux_model_cfg(aux_heads=dict(fcos=fcos)))
    head = model.aux_heads['fcos']
    prior_bias = -math.log((1 - 0.01) / 0.01)
    torch.testing.assert_close(head.conv_cls.bias, torch.full_like(head.conv_cls.bias,
                                                                   prior_bias))
    assert head.conv_cls.weight.std().item() == pytest.approx(0.01, rel=0.2)


def test_a_built_model_holds_no_uninitialised_values():
    """Every parameter and buffer is finite right after construction, before init_weights
    (torch.empty-backed parameters made some runs of the gradient test above fail)."""
    for _ in range(3):
        model = MODELS.build(tiny_model_cfg())
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if tensor.is_floating_point():
                assert torch.isfinite(tensor).all(), name
    level_embeds = MODELS.build(tiny_model_cfg()).query_head.transformer.level_embeds
    assert torch.equal(level_embeds, torch.zeros_like(level_embeds))
