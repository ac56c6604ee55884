"""Tiny single-scale (C5) query heads and Co-DETR models for the tests."""
from __future__ import annotations

from .aux_heads.test_co_rpn_roi_head import head_cfg as rcnn_head_cfg

C, NUM_CLASSES, NUM_QUERIES, NUM_LAYERS = 16, 3, 6, 2
KINDS = ('conditional', 'dab')
HEAD_TYPES = dict(conditional='CoConditionalDETRHead', dab='CoDABDETRHead')
PYRAMID_STRIDES = [8, 16, 32, 64, 128]


def tiny_head_cfg(kind: str, **overrides) -> dict:
    """A C5 head of width 16, 2 heads, 1 encoder and 2 decoder layers, 6 queries."""
    ffn = dict(embed_dims=C, feedforward_channels=32, ffn_drop=0.0)
    if kind == 'dab':
        ffn['act_cfg'] = dict(type='PReLU')
    attn = dict(embed_dims=C, num_heads=2, attn_drop=0.0, proj_drop=0.0)
    decoder = dict(type='ConditionalDetrTransformerDecoder' if kind == 'conditional'
                   else 'DabDetrTransformerDecoder', num_layers=NUM_LAYERS,
                   layer_cfg=dict(self_attn_cfg=attn, cross_attn_cfg=attn, ffn_cfg=ffn))
    cfg = dict(
        type=HEAD_TYPES[kind], num_classes=NUM_CLASSES, num_queries=NUM_QUERIES,
        encoder=dict(type='DetrTransformerEncoder', num_layers=1, scale_pos=kind == 'dab',
                     layer_cfg=dict(self_attn_cfg=dict(embed_dims=C, num_heads=2, dropout=0.0),
                                    ffn_cfg=ffn)),
        decoder=decoder,
        positional_encoding=dict(num_feats=C // 2, normalize=True,
                                 temperature=20 if kind == 'dab' else 10000))
    cfg.update(overrides)
    return cfg


def tiny_model_cfg(kind: str, aux: tuple[str, ...] = ('rcnn', 'atss')) -> dict:
    """CoDETR with a ResNet-18 C5, the single-scale adapter and the given real aux heads
    (the Faster R-CNN one of the RoI head tests, on the pyramid strides 8..128)."""
    gn = dict(type='GN', num_groups=4)
    heads = dict(
        rcnn=rcnn_head_cfg(rcnn_num=64, max_per_img=5, channels=C, fc=32,
                           num_classes=NUM_CLASSES, strides=PYRAMID_STRIDES),
        atss=dict(type='CoATSSHead', num_classes=NUM_CLASSES, in_channels=C, feat_channels=C,
                  stacked_convs=1, norm_cfg=gn,
                  anchor_generator=dict(type='AnchorGenerator', ratios=[1.0],
                                        octave_base_scale=4, scales_per_octave=1,
                                        strides=PYRAMID_STRIDES)))
    return dict(
        type='CoDETR',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
        backbone=dict(type='ResNet', depth=18, out_indices=(3,), frozen_stages=-1,
                      norm_eval=False),
        neck=dict(type='ChannelMapper', in_channels=[512], kernel_size=1, out_channels=C,
                  act_cfg=None, norm_cfg=None, num_outs=1),
        query_head=tiny_head_cfg(kind),
        adapter=dict(type='SingleScaleAdapter', strides=PYRAMID_STRIDES, norm_cfg=gn),
        aux_heads={name: heads[name] for name in aux},
        test_cfg=dict(query_head=dict(max_per_img=5)))
