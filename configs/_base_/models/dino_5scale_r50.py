# The one-to-one branch of Co-DINO R50 (5 scales) alone: Co-DETR with K = 0 aux heads.
# Every number is the official Co-DINO R50 12e setting (REFERENCE.md, "Official
# implementation details"); a Co-DINO config adds `adapter` and `aux_heads` on top.
# The dataset's classes: CoDETR gives this count to every head that does not set its own.
num_classes = 80
embed_dims = 256
num_levels = 5  # C2..C5 through 1x1 conv + GN, plus a 3x3 stride-2 conv + GN on C5
num_heads = 8
num_points = 4
ffn_channels = 2048

deform_attn = dict(embed_dims=embed_dims, num_heads=num_heads, num_levels=num_levels,
                   num_points=num_points, dropout=0.0)
ffn = dict(embed_dims=embed_dims, feedforward_channels=ffn_channels, ffn_drop=0.0)

model = dict(
    type='CoDETR',
    num_classes=num_classes,
    lambda_1=1.0,  # paper eq. (6); unused until aux heads exist
    lambda_2=2.0,
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],  # ImageNet RGB mean / std in 0..255
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=1),
    backbone=dict(
        type='ResNet',
        depth=50,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        # torchvision's ImageNet ResNet-50 (the official `torchvision://resnet50`); codetr
        # never downloads: fetch
        # https://download.pytorch.org/models/resnet50-0676ba61.pth into checkpoints/.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/resnet50-0676ba61.pth')),
    neck=dict(
        type='ChannelMapper',
        in_channels=[256, 512, 1024, 2048],
        kernel_size=1,
        out_channels=embed_dims,
        act_cfg=None,
        norm_cfg=dict(type='GN', num_groups=32),
        num_outs=num_levels),
    query_head=dict(
        type='CoDINOHead',
        embed_dims=embed_dims,
        num_queries=900,
        transformer=dict(
            type='CoDinoTransformer',
            num_feature_levels=num_levels,
            encoder=dict(
                type='DeformableDetrTransformerEncoder',
                num_layers=6,
                num_cp=4,  # the first 4 encoder layers recompute activations (official with_cp=4)
                layer_cfg=dict(self_attn_cfg=deform_attn, ffn_cfg=ffn)),
            decoder=dict(
                type='DinoTransformerDecoder',
                num_layers=6,
                return_intermediate=True,
                look_forward_twice=True,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=embed_dims, num_heads=num_heads, dropout=0.0),
                    cross_attn_cfg=deform_attn,
                    ffn_cfg=ffn))),
        positional_encoding=dict(
            type='SinePositionalEncoding', num_feats=embed_dims // 2, temperature=20,
            normalize=True),
        dn_cfg=dict(
            label_noise_scale=0.5,
            box_noise_scale=1.0,
            group_cfg=dict(dynamic=True, num_groups=None, num_dn_queries=100)),
        loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0)),
    # K = 0: the plain DINO baseline. Co-DINO configs name their aux heads here.
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
    test_cfg=dict(
        eval_module='detr',
        # top-300 over (query x class), then soft-NMS at IoU 0.8 (adds ~0.2 AP officially)
        query_head=dict(max_per_img=300, nms=dict(type='soft_nms', iou_threshold=0.8))),
)
