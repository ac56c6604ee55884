"""Single-scale Co-DETR: Conditional-DETR-C5 / DAB-DETR-C5 with real aux heads on the
single-scale adapter's pyramid (K = 2), and the plain baselines (K = 0)."""
from __future__ import annotations

import pytest
import torch

from codetr.registry import MODELS

from .single_scale_models import KINDS, NUM_CLASSES, tiny_model_cfg
from .test_co_detr import make_batch

SIZES = [(96, 128), (64, 96)]


def _build(cfg: dict):
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model.train()


@pytest.fixture(scope='module')
def k2_models() -> dict:
    return {kind: _build(tiny_model_cfg(kind)) for kind in KINDS}


def _batch(model, training: bool = True, scale: float = 1.0) -> dict:
    return model.data_preprocessor(make_batch(SIZES, scale=scale), training=training)


@pytest.mark.parametrize('kind', KINDS)
def test_k2_loss_keys_and_every_parameter_gets_a_gradient(k2_models, kind):
    model = k2_models[kind]
    assert model.adapter.strides == (8, 16, 32, 64, 128)
    torch.manual_seed(3)  # positive subsampling and RoI sampling draw from torch
    losses = model(**_batch(model), mode='loss')
    for name in ('rcnn', 'atss'):
        assert f'{name}.loss_cls' in losses and f'{name}.loss_bbox' in losses
        for key in ('loss_cls', 'loss_bbox', 'loss_iou', 'd0.loss_cls', 'd0.loss_iou'):
            assert f'{name}.pos.{key}' in losses, key
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    model.zero_grad()
    total.backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, f'parameters without a finite gradient: {missing}'
    # The adapter's five levels, the positive-query generators and the aux heads learn (the
    # ATSS Scale of a level without positives is the one exception: no box loss reaches it).
    collaborative = ('adapter.', 'query_head.pos_query_generators.', 'aux_heads.')
    zero = [n for n, p in model.named_parameters()
            if n.startswith(collaborative) and '.scales.' not in n and not p.grad.any()]
    assert not zero, f'collaborative parameters with a zero gradient: {zero}'
    assert {n.split('.')[1] for n, _ in model.named_parameters()
            if n.startswith('adapter.')} == {'upsample', 'downsample'}


@pytest.mark.parametrize('kind', KINDS)
def test_k0_is_the_plain_baseline(kind):
    model = _build({**tiny_model_cfg(kind, aux=()), 'adapter': dict(type='Unbuilt')})
    assert model.adapter is None and len(model.aux_heads) == 0
    assert len(model.query_head.pos_query_generators) == 0
    data = _batch(model)
    losses = model(**data, mode='loss')
    plain, _ = model.query_head.loss(model.extract_feat(data['inputs']), data['data_samples'])
    assert set(losses) == set(plain) == {f'{p}loss_{n}' for p in ('', 'd0.')
                                         for n in ('cls', 'bbox', 'iou')}
    for key, value in plain.items():
        torch.testing.assert_close(losses[key], value, msg=key)


def test_evaluation_through_the_atss_head_skips_the_decoder(monkeypatch):
    cfg = tiny_model_cfg('dab', aux=('atss',))
    cfg['test_cfg'] = dict(eval_module='one-stage', atss=dict(max_per_img=7, score_thr=0.0))
    model = _build(cfg).eval()

    def no_decoder(*args, **kwargs):
        raise AssertionError('the decoder must not run for aux evaluation')

    monkeypatch.setattr(model.query_head.decoder, 'forward', no_decoder)
    with torch.no_grad():
        samples = model(**_batch(model, training=False, scale=0.5), mode='predict')
    for sample, (h, w) in zip(samples, SIZES):
        pred = sample.pred_instances
        assert 0 < len(pred) <= 7 and pred.labels.max() < NUM_CLASSES
        # original pixels (scale 0.5): inside twice the input size
        assert pred.bboxes[:, 0::2].max() <= 2 * w + 1e-3
        assert pred.bboxes[:, 1::2].max() <= 2 * h + 1e-3
