"""CoDeformDETRHead (Co-Deformable-DETR one-to-one branch) at tiny widths."""
from __future__ import annotations

import math

import pytest
import torch
from mmengine.structures import InstanceData

from codetr.models.query_heads import co_deform_detr_head  # noqa: F401  (registers the head)
from codetr.models.query_heads.co_deform_detr_transformer import proposal_pos_embed
from codetr.registry import MODELS
from codetr.structures import DetDataSample

C, HEADS, POINTS, FFN = 32, 4, 2, 64
NUM_CLASSES, NUM_QUERIES, NUM_LAYERS = 3, 10, 2
BATCH_SHAPE = (64, 80)  # padded network input (h, w); features at strides 8 and 16
IMG_SHAPES = [(64, 80), (48, 64)]


def _layer_cfg(decoder: bool) -> dict:
    msda = dict(embed_dims=C, num_heads=HEADS, num_levels=2, num_points=POINTS,
                dropout=0.0, backend='pytorch')
    cfg = dict(ffn_cfg=dict(embed_dims=C, feedforward_channels=FFN, ffn_drop=0.0))
    if decoder:
        cfg.update(self_attn_cfg=dict(embed_dims=C, num_heads=HEADS, dropout=0.0),
                   cross_attn_cfg=msda)
    else:
        cfg.update(self_attn_cfg=msda)
    return cfg


def _head(look_forward_twice: bool = True, **kwargs):
    transformer = dict(
        type='CoDeformableDetrTransformer', num_feature_levels=2,
        encoder=dict(type='DeformableDetrTransformerEncoder', num_layers=1,
                     layer_cfg=_layer_cfg(False)),
        decoder=dict(type='DeformableDetrTransformerDecoder', num_layers=NUM_LAYERS,
                     layer_cfg=_layer_cfg(True), look_forward_twice=look_forward_twice))
    cfg = dict(type='CoDeformDETRHead', num_classes=NUM_CLASSES, num_queries=NUM_QUERIES,
               transformer=transformer,
               positional_encoding=dict(type='SinePositionalEncoding', num_feats=C // 2,
                                        normalize=True, offset=-0.5))
    cfg.update(kwargs)
    torch.manual_seed(0)
    head = MODELS.build(cfg)
    head.init_weights()
    return head


def _samples(with_gt: bool = True, scale: float = 1.0) -> list[DetDataSample]:
    samples = []
    for i, (h, w) in enumerate(IMG_SHAPES):
        meta = dict(img_shape=(h, w), batch_input_shape=BATCH_SHAPE, scale_factor=(scale, scale),
                    ori_shape=(round(h / scale), round(w / scale)))
        sample = DetDataSample(metainfo=meta)
        boxes = [[4., 6., 30., 40.], [20., 10., 60., 44.]][:i + 1] if with_gt else []
        sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes).reshape(-1, 4),
                                           labels=torch.arange(len(boxes)) % NUM_CLASSES)
        samples.append(sample)
    return samples


def _feats() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(2, C, BATCH_SHAPE[0] // s, BATCH_SHAPE[1] // s, generator=g)
            for s in (8, 16)]


def test_loss_keys_values_and_memory_shapes():
    head = _head()
    feats = _feats()
    losses, memory = head.loss(feats, _samples())
    names = [f'{p}loss_{n}' for p in ('', 'd0.', 'enc_') for n in ('cls', 'bbox', 'iou')]
    assert sorted(losses) == sorted(names)
    for name, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), name
        assert value > 0, name  # every loss term has positives here
    assert [m.shape for m in memory] == [f.shape for f in feats]


def test_every_parameter_gets_a_gradient():
    head = _head()
    # Regressor outputs, deformable offsets and attention weights start at zero.
    _perturb_zero_weights(head)
    losses, memory = head.loss(_feats(), _samples())
    (sum(losses.values()) + sum(m.sum() for m in memory) * 0).backward()
    missing = [n for n, p in head.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert missing == []


def test_no_gt_gives_classification_loss_only():
    losses, _ = _head().loss(_feats(), _samples(with_gt=False))
    for name, value in losses.items():
        if 'loss_cls' in name:
            assert value > 0, name
        else:
            assert value == 0, name


def test_initial_predictions_are_the_top_proposals_by_class_0():
    """With zero-initialised regressors every layer predicts its reference box unchanged,
    and the first references are the proposals ranked by their class-0 logit."""
    head = _head().eval()
    samples = _samples()
    with torch.no_grad():
        out = head(_feats(), samples)
    assert out['all_cls_scores'].shape == (NUM_LAYERS, 2, NUM_QUERIES, NUM_CLASSES)
    assert out['enc_cls_scores'].shape == (2, 8 * 10 + 4 * 5, NUM_CLASSES)
    top = out['enc_cls_scores'][..., 0].topk(NUM_QUERIES, dim=1)[1]
    expected = torch.gather(out['enc_bbox_preds'], 1, top[..., None].expand(-1, -1, 4))
    for layer in range(NUM_LAYERS):
        torch.testing.assert_close(out['all_bbox_preds'][layer], expected, atol=1e-4, rtol=0)


def test_predict_caps_detections_and_rescales_to_original_pixels():
    head = _head(test_cfg=dict(max_per_img=7)).eval()
    feats = _feats()
    with torch.no_grad():
        scaled = head.predict(feats, _samples(scale=2.0), rescale=True)
        unscaled = head.predict(feats, _samples(scale=2.0), rescale=False)
    for res, raw, (h, w) in zip(scaled, unscaled, IMG_SHAPES):
        assert len(res) == 7 and res.bboxes.shape == (7, 4)
        assert torch.all(res.scores[:-1] >= res.scores[1:])
        assert res.labels.max() < NUM_CLASSES
        # ori_shape is half of img_shape: rescaled boxes are half the input-pixel boxes.
        torch.testing.assert_close(res.bboxes * 2, raw.bboxes)
        assert raw.bboxes[:, 0::2].max() <= w and raw.bboxes[:, 1::2].max() <= h
        assert res.bboxes.min() >= 0 and res.bboxes[:, 0::2].max() <= w / 2


def test_predict_with_nms_keeps_at_most_max_per_img():
    nms = dict(type='soft_nms', iou_threshold=0.8)
    head = _head(test_cfg=dict(max_per_img=5, nms=nms)).eval()
    with torch.no_grad():
        results = head.predict(_feats(), _samples(), rescale=False)
    for res in results:
        assert 0 < len(res) <= 5
        assert torch.all(res.scores[:-1] >= res.scores[1:])


def test_parameter_names_follow_the_official_checkpoint():
    keys = set(_head().state_dict())
    for key in ('query_embedding.weight', 'transformer.level_embeds',
                'transformer.enc_output.weight', 'transformer.enc_output_norm.weight',
                'transformer.pos_trans.weight', 'transformer.pos_trans_norm.bias',
                f'cls_branches.{NUM_LAYERS}.bias', f'reg_branches.{NUM_LAYERS}.4.weight',
                'reg_branches.0.0.weight', 'reg_branches.0.2.weight',
                'transformer.encoder.layers.0.attentions.0.sampling_offsets.weight',
                'transformer.decoder.layers.1.attentions.1.value_proj.weight'):
        assert key in keys, key
    assert f'cls_branches.{NUM_LAYERS + 1}.bias' not in keys


def test_wrong_number_of_levels_is_reported():
    head = _head()
    with pytest.raises(ValueError, match='num_feature_levels=2'):
        head.loss(_feats()[:1], _samples())


def test_too_few_positions_for_the_queries_is_reported():
    head = _head(num_queries=200)  # the 64 x 80 input gives 8 * 10 + 4 * 5 = 100 positions
    with pytest.raises(ValueError, match='100 positions, fewer than num_queries=200'):
        head.loss(_feats(), _samples())


def _perturb_zero_weights(head) -> None:
    """Zero-initialised matrices block gradients at step 0; give them small values."""
    with torch.no_grad():
        for param in head.parameters():
            if param.dim() > 1 and param.abs().sum() == 0:
                param.normal_(std=1e-2)


@pytest.mark.parametrize('look_forward_twice', [False, True])
def test_look_forward_twice_lets_layer_1_boxes_train_layer_0_regressor(look_forward_twice):
    head = _head(look_forward_twice=look_forward_twice)
    _perturb_zero_weights(head)
    samples = _samples()
    out = head(_feats(), samples)
    out['all_bbox_preds'][1].sum().backward()
    grad = head.reg_branches[0][-1].weight.grad
    reached = grad is not None and grad.abs().sum() > 0
    assert reached == look_forward_twice


def test_encoder_proposal_losses_ignore_the_class():
    head = _head()
    feats = _feats()
    base, _ = head.loss(feats, _samples())
    relabelled = _samples()
    for sample in relabelled:
        sample.gt_instances.labels = (sample.gt_instances.labels + 1) % NUM_CLASSES
    other, _ = head.loss(feats, relabelled)
    for name in ('enc_loss_cls', 'enc_loss_bbox', 'enc_loss_iou'):
        torch.testing.assert_close(other[name], base[name])
    assert not torch.isclose(other['loss_cls'], base['loss_cls'])


def test_proposal_pos_embed_by_hand():
    box = torch.tensor([[[0.25, 0.5, 0.1, 0.2]]])
    embed = proposal_pos_embed(box, num_feats=4)
    # dim_t = 10000 ** (2 * (i // 2) / 4) = [1, 1, 100, 100]; order cx, cy, w, h.
    expected = []
    for v in (0.25, 0.5, 0.1, 0.2):
        a = 2 * math.pi * v
        expected += [math.sin(a), math.cos(a), math.sin(a / 100), math.cos(a / 100)]
    torch.testing.assert_close(embed[0, 0], torch.tensor(expected))


def test_default_transformer_is_the_official_r50_one():
    head = MODELS.build(dict(type='CoDeformDETRHead', num_classes=80))
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes['query_embedding.weight'] == (300, 256)
    assert shapes['transformer.level_embeds'] == (4, 256)
    assert shapes['transformer.pos_trans.weight'] == (512, 512)
    assert shapes['cls_branches.6.weight'] == (80, 256)  # 6 decoder layers + proposals
    assert 'cls_branches.7.weight' not in shapes
    assert shapes['transformer.encoder.layers.5.ffns.0.layers.1.weight'] == (256, 2048)
    assert shapes['transformer.decoder.layers.5.attentions.1.sampling_offsets.weight'] == (
        256, 256)  # 8 heads x 4 levels x 4 points x 2
    assert head.transformer.decoder.look_forward_twice
