# Deformable-DETR++ R50 (two-stage, iterative box refinement, mixed query selection,
# look-forward-twice): the one-to-one branch of Co-Deformable-DETR alone (K = 0 aux heads).
# Numbers from the official co_deformable_detr_r50_1x_coco.py (REFERENCE.md).
# The dataset's classes: CoDETR gives this count to every head that does not set its own.
num_classes = 80
embed_dims = 256
num_levels = 4  # C3..C5 through 1x1 conv + GN, plus a 3x3 stride-2 conv + GN on C5
num_heads = 8
num_points = 4
ffn_channels = 2048

deform_attn = dict(embed_dims=embed_dims, num_heads=num_heads, num_levels=num_levels,
                   num_points=num_points, dropout=0.0)
ffn = dict(embed_dims=embed_dims, feedforward_channels=ffn_channels, ffn_drop=0.0)

model = dict(
    type='CoDETR',
    num_classes=num_classes,
    lambda_1=1.0,
    lambda_2=2.0,
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=1),
    backbone=dict(
        type='ResNet',
        depth=50,
        out_indices=(1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        # torchvision's ImageNet ResNet-50; codetr never downloads: fetch
        # https://download.pytorch.org/models/resnet50-0676ba61.pth into checkpoints/.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/resnet50-0676ba61.pth')),
    neck=dict(
        type='ChannelMapper',
        in_channels=[512, 1024, 2048],
        kernel_size=1,
        out_channels=embed_dims,
        act_cfg=None,
        norm_cfg=dict(type='GN', num_groups=32),
        num_outs=num_levels),
    query_head=dict(
        type='CoDeformDETRHead',
        num_queries=300,
        transformer=dict(
            type='CoDeformableDetrTransformer',
            num_feature_levels=num_levels,
            encoder=dict(
                type='DeformableDetrTransformerEncoder',
                num_layers=6,
                layer_cfg=dict(self_attn_cfg=deform_attn, ffn_cfg=ffn)),
            decoder=dict(
                type='DeformableDetrTransformerDecoder',
                num_layers=6,
                return_intermediate=True,
                look_forward_twice=True,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=embed_dims, num_heads=num_heads, dropout=0.0),
                    cross_attn_cfg=deform_attn,
                    ffn_cfg=ffn))),
        # SinePositionalEncoding kwargs
        positional_encoding=dict(num_feats=embed_dims // 2, normalize=True, offset=-0.5),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=2.0),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0)),
    adapter=None,
    aux_heads=dict(),
    train_cfg=dict(
        query_head=dict(
            assigner=dict(
                type='HungarianAssigner',
                match_costs=[
                    dict(type='FocalLossCost', weight=2.0),
                    dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                    dict(type='IoUCost', iou_mode='giou', weight=2.0),
                ]))),
    # top-100 over (query x class), no NMS
    test_cfg=dict(eval_module='detr', query_head=dict(max_per_img=100)),
)
