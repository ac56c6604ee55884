# Co-DETR ViT-L: Co-DINO (5 scales, K = 2: Faster R-CNN "rcnn" + ATSS "atss") on an EVA-02
# ViT-L with a simple feature pyramid, as the official
# projects/configs/co_dino_vit/co_dino_5scale_vit_large_coco.py (Sense-X/Co-DETR): RoPE,
# SwiGLU (sub-LN), window 24 with global attention in blocks 3, 7, ..., 23, drop path 0.4,
# 1500 queries, 300 denoising queries with box noise 0.4, a 4-conv + 1-FC RoI head, and the
# official test settings (REFERENCE.md, ViT-L). ~304M backbone parameters.
_base_ = ['./co_dino_5scale_r50.py']

embed_dims = 256
vit_dim = 1024
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),  # official Pad(size_divisor=32)
    backbone=dict(
        _delete_=True,
        type='ViT',
        embed_dim=vit_dim, depth=24, num_heads=16, patch_size=16, mlp_ratio=4 * 2 / 3,
        qkv_bias=True,
        drop_path_rate=0.4,
        window_size=24,
        window_block_indexes=[i for i in range(24) if i % 4 != 3],  # global: 3, 7, ..., 23
        pretrain_img_size=512,  # position embedding grid 32 x 32 (EVA-02 at 512 px)
        with_cp=True,  # every block recomputes its activations (official)
        init_cfg=None),
    neck=dict(
        _delete_=True,
        type='SimpleFeaturePyramid', in_channels=vit_dim, out_channels=embed_dims, num_outs=5,
        use_p2=True),  # strides 4, 8, 16, 32, 64
    query_head=dict(
        num_queries=1500,
        transformer=dict(encoder=dict(num_cp=6)),  # all 6 encoder layers checkpointed
        dn_cfg=dict(box_noise_scale=0.4, group_cfg=dict(num_dn_queries=300))),
    aux_heads=dict(rcnn=dict(roi=dict(bbox_head=dict(
        type='Shared4Conv1FCBBoxHead',  # 4 x (3x3 conv + GN + ReLU), 1 FC of 1024
        conv_out_channels=embed_dims,
        norm_cfg=dict(type='GN', num_groups=32),
        reg_class_agnostic=True,
        bbox_coder=dict(target_stds=[0.05, 0.05, 0.1, 0.1]))))),
    test_cfg=dict(
        query_head=dict(max_per_img=1000, nms=dict(type='soft_nms', iou_threshold=0.8)),
        rcnn=dict(
            rpn=dict(nms_pre=8000, max_per_img=2000, nms=dict(type='nms', iou_threshold=0.9)),
            rcnn=dict(nms=dict(type='soft_nms', iou_threshold=0.5), max_per_img=1000)),
        atss=dict(nms=dict(type='soft_nms', iou_threshold=0.6), max_per_img=100)),
)
