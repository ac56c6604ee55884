# Co-Conditional-DETR-C5 R50, K = 2 aux heads: Conditional-DETR (Meng et al., ICCV 2021) on the
# ResNet-50 C5 map (stride 32, one 1x1 conv to 256 channels) as the one-to-one branch, the
# single-scale adapter, a Faster R-CNN aux head ("rcnn") and an ATSS aux head ("atss").
# Paper Table 2 (36 epochs, COCO val box AP): K = 0 39.4, K = 1 41.5, K = 2 41.8.
# The one-to-one branch has the official Conditional-DETR R50 settings (300 queries, 6 + 6
# layers, 8 heads, FFN 2048, dropout 0.1, sine positions with temperature 10000, focal loss 2,
# L1 5, GIoU 2, Hungarian costs 2 / 5 / 2, top 100 at test). The aux heads are the
# Co-Deformable-DETR ones (co_deformable_detr_r50.py): the adapter turns the C5 memory into the
# same strides 8..128 (bilinear x2 + 3x3 conv twice for 16 and 8, 3x3 stride-2 conv twice for
# 64 and 128, each with GroupNorm; paper section 3.2), and their loss weights are the official
# ones / 12, as CoDETR multiplies them by lambda_2 x 6 decoder layers.
embed_dims = 256
num_heads = 8
ffn_channels = 2048
dropout = 0.1  # Conditional-DETR: attention weights, residual branches and FFN
# Strides of the single-scale adapter's pyramid; the encoder map is the stride-32 level.
pyramid_strides = [8, 16, 32, 64, 128]

ffn = dict(embed_dims=embed_dims, feedforward_channels=ffn_channels, ffn_drop=dropout)
cond_attn = dict(embed_dims=embed_dims, num_heads=num_heads, attn_drop=dropout,
                 proj_drop=dropout)

model = dict(
    num_classes=80,  # COCO; every head takes it
    type='CoDETR',
    lambda_1=1.0,  # positive-query branches (paper eq. 6)
    lambda_2=2.0,  # aux-head losses (paper eq. 6)
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=1),
    backbone=dict(
        type='ResNet',
        depth=50,
        out_indices=(3, ),  # C5 only
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        # torchvision's ImageNet ResNet-50; codetr never downloads: fetch
        # https://download.pytorch.org/models/resnet50-0676ba61.pth into checkpoints/.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/resnet50-0676ba61.pth')),
    # DETR's input projection: one 1x1 conv with bias, no norm.
    neck=dict(type='ChannelMapper', in_channels=[2048], kernel_size=1, out_channels=embed_dims,
              act_cfg=None, norm_cfg=None, num_outs=1),
    query_head=dict(
        type='CoConditionalDETRHead',
        num_queries=300,
        encoder=dict(
            type='DetrTransformerEncoder',
            num_layers=6,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=embed_dims, num_heads=num_heads, dropout=dropout),
                ffn_cfg=ffn)),
        decoder=dict(
            type='ConditionalDetrTransformerDecoder',
            num_layers=6,
            layer_cfg=dict(self_attn_cfg=cond_attn, cross_attn_cfg=cond_attn, ffn_cfg=ffn)),
        positional_encoding=dict(num_feats=embed_dims // 2, temperature=10000, normalize=True),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=2.0),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0),
        # positive queries: content and positional halves from the box embedding
        pos_query_cfg=dict(mode='deformable', with_coord_feat=False)),
    adapter=dict(type='SingleScaleAdapter', in_channels=embed_dims, in_stride=32,
                 strides=pyramid_strides, upsample='bilinear'),
    aux_heads=dict(
        rcnn=dict(
            type='CoRPNRoIHead',
            rpn=dict(
                in_channels=embed_dims,
                feat_channels=embed_dims,
                anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                      scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                      strides=pyramid_strides),
                bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                                target_stds=[1.0, 1.0, 1.0, 1.0]),
                loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
                loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
            roi=dict(
                # RoIs pool from strides 8..64, as Co-Deformable-DETR's (same pyramid).
                bbox_roi_extractor=dict(
                    type='SingleRoIExtractor',
                    roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
                    out_channels=embed_dims, featmap_strides=pyramid_strides[:4],
                    finest_scale=112),
                bbox_head=dict(
                    in_channels=embed_dims, fc_out_channels=1024, roi_feat_size=7,
                    bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                                    target_means=[0.0, 0.0, 0.0, 0.0],
                                    target_stds=[0.1, 0.1, 0.2, 0.2]),
                    reg_class_agnostic=False,
                    reg_decoded_bbox=True,
                    loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                    loss_bbox=dict(type='GIoULoss', loss_weight=10.0)))),
        atss=dict(
            type='CoATSSHead',
            in_channels=embed_dims,
            stacked_convs=1,  # Co-DETR's aux heads stack 1 conv, not ATSS's 4
            feat_channels=embed_dims,
            anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=8,
                                  scales_per_octave=1, strides=pyramid_strides),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                            target_stds=[0.1, 0.1, 0.2, 0.2]),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                          loss_weight=1.0),
            loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
            loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    ),
    train_cfg=dict(
        query_head=dict(
            assigner=dict(
                type='HungarianAssigner',
                match_costs=[
                    dict(type='FocalLossCost', weight=2.0),
                    dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                    dict(type='IoUCost', iou_mode='giou', weight=2.0),
                ])),
        rcnn=dict(
            rpn=dict(
                assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3,
                              min_pos_iou=0.3, match_low_quality=True, ignore_iof_thr=-1),
                sampler=dict(type='RandomSampler', num=256, pos_fraction=0.5, neg_pos_ub=-1,
                             add_gt_as_proposals=False),
                allowed_border=-1,
                pos_weight=-1),
            rpn_proposal=dict(nms_pre=4000, max_per_img=1000,
                              nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
            rcnn=dict(
                assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5,
                              min_pos_iou=0.5, match_low_quality=False, ignore_iof_thr=-1),
                sampler=dict(type='RandomSampler', num=512, pos_fraction=0.25, neg_pos_ub=-1,
                             add_gt_as_proposals=True),
                pos_weight=-1)),
        atss=dict(assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1,
                  pos_weight=-1)),
    test_cfg=dict(
        # 'detr' (default), 'one-stage' (the ATSS head) or 'two-stage' (Faster R-CNN).
        eval_module='detr',
        query_head=dict(max_per_img=100),  # top 100 over (query x class), no NMS
        rcnn=dict(
            rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7),
                     min_bbox_size=0),
            rcnn=dict(score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)),
        atss=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.0,
                  nms=dict(type='nms', iou_threshold=0.6), max_per_img=100)),
)
