"""CoDINOHead on a tiny transformer: gradients, empty GT, loss keys, golden values,
rescaling, padding invariance, denoising attention mask, memory, parameter names."""
from __future__ import annotations

import logging

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.structures import InstanceData

from codetr.models.query_heads import CoDINOHead, level_padding_masks
from codetr.registry import MODELS
from codetr.structures import DetDataSample

DIMS, HEADS, LEVELS, QUERIES, CLASSES = 32, 2, 2, 20, 4
STRIDES = (8, 16)
LOSS_NAMES = ('cls', 'bbox', 'iou')


def tiny_head(enc_layers: int = 1, dec_layers: int = 2, **kwargs) -> CoDINOHead:
    msda = dict(embed_dims=DIMS, num_heads=HEADS, num_levels=LEVELS, num_points=2, dropout=0.0)
    ffn = dict(embed_dims=DIMS, feedforward_channels=64, ffn_drop=0.0)
    transformer = dict(
        num_feature_levels=LEVELS, select_padding=kwargs.pop('select_padding', True),
        encoder=dict(type='DeformableDetrTransformerEncoder', num_layers=enc_layers,
                     layer_cfg=dict(self_attn_cfg=msda, ffn_cfg=ffn)),
        decoder=dict(type='DinoTransformerDecoder', num_layers=dec_layers,
                     layer_cfg=dict(self_attn_cfg=dict(embed_dims=DIMS, num_heads=HEADS,
                                                       dropout=0.0),
                                    cross_attn_cfg=msda, ffn_cfg=ffn)))
    cfg = dict(type='CoDINOHead', num_classes=CLASSES, embed_dims=DIMS, num_queries=QUERIES,
               transformer=transformer,
               positional_encoding=dict(num_feats=DIMS // 2, temperature=20, normalize=True),
               dn_cfg=dict(group_cfg=dict(dynamic=True, num_groups=None, num_dn_queries=10)))
    cfg.update(kwargs)
    head = MODELS.build(cfg)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # mmengine logs every parameter's initialiser
    try:
        head.init_weights()
    finally:
        logger.setLevel(level)
    return head


def perturb(head: CoDINOHead, scale: float = 0.01) -> None:
    """Add small noise to every parameter, so that no layer starts at exactly zero."""
    with torch.no_grad():
        for param in head.parameters():
            param.add_(scale * torch.randn_like(param))


def sample(img_shape: tuple[int, int], batch_shape: tuple[int, int], boxes: list[list[float]],
           labels: list[int], scale_factor: tuple[float, float] = (1.0, 1.0)) -> DetDataSample:
    data = DetDataSample(metainfo=dict(img_shape=img_shape, batch_input_shape=batch_shape,
                                       scale_factor=scale_factor))
    data.gt_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
                                     labels=torch.tensor(labels, dtype=torch.long))
    return data


def feats_for(batch: int, batch_shape: tuple[int, int]) -> list[torch.Tensor]:
    return [torch.randn(batch, DIMS, batch_shape[0] // s, batch_shape[1] // s) for s in STRIDES]


def two_image_batch() -> list[DetDataSample]:
    return [sample((64, 64), (64, 64), [[4, 4, 30, 40], [20, 10, 60, 50]], [0, 3]),
            sample((48, 56), (64, 64), [[10, 10, 20, 30]], [1])]


def expected_keys(num_dec: int) -> set[str]:
    keys = {f'enc_loss_{n}' for n in LOSS_NAMES}
    for prefix in ('', 'dn_'):
        keys |= {f'{prefix}loss_{n}' for n in LOSS_NAMES}
        keys |= {f'd{i}.{prefix}loss_{n}' for i in range(num_dec - 1) for n in LOSS_NAMES}
    return keys


def test_loss_keys_memory_and_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    head = tiny_head()
    perturb(head)  # zero-initialised layers (box branches, offsets) would block gradients
    feats = feats_for(2, (64, 64))
    losses, memory = head.loss(feats, two_image_batch())
    assert set(losses) == expected_keys(num_dec=2)
    assert [m.shape for m in memory] == [f.shape for f in feats]
    sum(losses.values()).backward()
    no_grad = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())


def test_without_gt_cls_losses_are_positive_and_box_losses_zero() -> None:
    torch.manual_seed(0)
    head = tiny_head()
    batch = [sample((64, 64), (64, 64), [], []), sample((32, 48), (64, 64), [], [])]
    losses, _ = head.loss(feats_for(2, (64, 64)), batch)
    assert set(losses) == expected_keys(num_dec=2)
    for key, value in losses.items():
        if 'loss_cls' in key and not key.startswith(('dn_', 'd0.dn_')):
            assert value.item() > 0, key
        else:  # box losses, and the denoising losses (no denoising query without GT)
            assert value.item() == 0, key
    sum(losses.values()).backward()
    # DDP needs every parameter in the graph even when the batch has no GT
    assert head.dn_generator.label_embedding.weight.grad is not None


def test_golden_losses_with_a_fixed_seed() -> None:
    # Values produced once by this test's own set-up (seed 0, tiny head perturbed by 0.05,
    # two images) and written down; they pin the whole loss path (encoder, selection,
    # denoising, matching).
    torch.manual_seed(0)
    head = tiny_head()
    perturb(head, 0.05)
    losses, _ = head.loss(feats_for(2, (64, 64)), two_image_batch())
    for key, value in GOLDEN.items():
        assert losses[key].item() == pytest.approx(value, rel=1e-4, abs=1e-6), key


GOLDEN = {'loss_cls': 6.76767e-4, 'loss_bbox': 4.93953, 'loss_iou': 1.97363,
          'd0.loss_bbox': 4.75576, 'enc_loss_bbox': 4.90895, 'enc_loss_iou': 2.03103,
          'dn_loss_cls': 0.378167, 'dn_loss_bbox': 2.19192, 'd0.dn_loss_iou': 1.3392}


def test_predictions_are_capped_and_rescaled_to_the_original_image() -> None:
    torch.manual_seed(0)
    head = tiny_head(test_cfg=dict(max_per_img=7))
    feats = feats_for(1, (64, 64))
    base = head.predict(feats, [sample((64, 64), (64, 64), [], [])])[0]
    half = head.predict(feats, [sample((64, 64), (64, 64), [], [], (0.5, 0.5))])[0]
    raw = head.predict(feats, [sample((64, 64), (64, 64), [], [], (0.5, 0.5))],
                       rescale=False)[0]
    assert len(base) == 7 and base.bboxes.shape == (7, 4)
    assert (base.scores[:-1] >= base.scores[1:]).all()
    assert base.labels.max() < CLASSES
    assert (base.bboxes >= 0).all() and (base.bboxes <= 64).all()
    torch.testing.assert_close(half.bboxes, 2 * base.bboxes)
    torch.testing.assert_close(raw.bboxes, base.bboxes)


def test_score_threshold_and_soft_nms() -> None:
    torch.manual_seed(0)
    feats = feats_for(1, (64, 64))
    plain = tiny_head(test_cfg=dict(max_per_img=30))
    torch.manual_seed(0)
    thr = tiny_head(test_cfg=dict(max_per_img=30, score_thr=1.0))
    data = [sample((64, 64), (64, 64), [], [])]
    assert len(thr.predict(feats, data)[0]) == 0
    torch.manual_seed(0)
    nms = tiny_head(test_cfg=dict(max_per_img=30, nms=dict(type='soft_nms', iou_threshold=0.8)))
    before, after = plain.predict(feats, data)[0], nms.predict(feats, data)[0]
    assert len(after) <= 30
    # soft-NMS only lowers scores
    assert after.scores.max() <= before.scores.max() + 1e-6


def test_more_padding_does_not_change_the_encoder_or_the_proposals() -> None:
    # The decoder's query_pos is a sine of the reference box in padded-map coordinates (DINO
    # and the port do so), so the final scores move slightly with padding; everything up to
    # the decoder must not.
    torch.manual_seed(0)
    head = tiny_head(select_padding=False).eval()
    small = feats_for(1, (32, 48))
    padded = feats_for(1, (64, 64))
    for lvl, feat in enumerate(small):  # same image content, then extra padding
        padded[lvl][..., :feat.shape[-2], :feat.shape[-1]] = feat
    with torch.no_grad():
        tight = head.encode(small, [sample((32, 48), (32, 48), [], [])])
        loose = head.encode(padded, [sample((32, 48), (64, 64), [], [])])
        for a, b in zip(tight.split_levels(), loose.split_levels()):
            torch.testing.assert_close(b[..., :a.shape[-2], :a.shape[-1]], a, atol=1e-5,
                                       rtol=1e-4)
        picks = [head.transformer.select_queries(e, head.cls_branches[-1],
                                                 head.reg_branches[-1]) for e in (tight, loose)]
    torch.testing.assert_close(picks[1].enc_scores, picks[0].enc_scores, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(picks[1].enc_boxes, picks[0].enc_boxes, atol=1e-5, rtol=1e-4)


def test_padding_masks_follow_img_shape_at_every_level() -> None:
    feats = feats_for(2, (64, 64))
    masks = level_padding_masks(feats, [sample((64, 64), (64, 64), [], []),
                                        sample((32, 48), (64, 64), [], [])])
    assert [m.shape for m in masks] == [(2, 8, 8), (2, 4, 4)]
    assert not masks[0][0].any()
    assert (~masks[0][1]).sum() == 4 * 6 and (~masks[1][1]).sum() == 2 * 3
    with pytest.raises(KeyError, match='batch_input_shape'):
        level_padding_masks(feats, [DetDataSample(metainfo=dict(img_shape=(64, 64)))])


def test_denoising_queries_go_first_with_their_attention_mask(monkeypatch) -> None:
    torch.manual_seed(0)
    head = tiny_head()
    seen = {}
    decode = head.transformer.decode

    def spy(query, reference_points, enc, reg_branches, self_attn_mask=None):
        seen.update(query=query.shape, reference=reference_points.shape, mask=self_attn_mask)
        return decode(query, reference_points, enc, reg_branches, self_attn_mask)

    monkeypatch.setattr(head.transformer, 'decode', spy)
    head.loss(feats_for(2, (64, 64)), two_image_batch())
    num_dn = 2 * 2 * (10 // 2)  # pos + neg, max 2 GT per image, 10 // 2 groups
    total = num_dn + QUERIES
    assert seen['query'] == (2, total, DIMS) and seen['reference'] == (2, total, 4)
    mask = seen['mask']
    assert mask.shape == (total, total) and mask.dtype == torch.bool
    assert mask[num_dn:, :num_dn].all() and not mask[num_dn:, num_dn:].any()
    assert not mask[:4, :4].any() and mask[:4, 4:num_dn].all()  # group 0 sees only itself


def test_parameter_names_follow_the_port() -> None:
    head = tiny_head()
    names = set(dict(head.named_parameters()))
    for name in ('transformer.level_embeds', 'transformer.enc_output.weight',
                 'transformer.enc_output_norm.bias', 'transformer.query_embed.weight',
                 'transformer.decoder.ref_point_head.2.weight', 'transformer.decoder.norm.weight',
                 'cls_branches.2.bias', 'reg_branches.2.4.weight', 'reg_branches.0.2.bias',
                 'dn_generator.label_embedding.weight'):
        assert name in names, name
    assert not any(n.startswith('downsample') for n in names)
    assert len(head.cls_branches) == len(head.reg_branches) == 3
    # init: class prior 0.01, box branches end at zero
    assert head.cls_branches[0].bias[0].item() == pytest.approx(-4.59512, abs=1e-4)
    assert not head.reg_branches[1][-1].weight.any()


def test_config_errors_say_what_to_fix() -> None:
    with pytest.raises(ValueError, match='num_feats'):
        tiny_head(positional_encoding=dict(num_feats=8))
    head = tiny_head()
    with pytest.raises(ValueError, match='num_queries'):
        head.predict(feats_for(1, (16, 16)), [sample((16, 16), (16, 16), [], [])])
    with pytest.raises(ValueError, match='num_feature_levels'):
        head.predict(feats_for(1, (64, 64))[:1], [sample((64, 64), (64, 64), [], [])])
