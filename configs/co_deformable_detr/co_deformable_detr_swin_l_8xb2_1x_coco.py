# Co-Deformable-DETR Swin-L, K = 2, 12 epochs on COCO, 8 GPUs x 2 images, AdamW weight decay
# 0.05 (official co_deformable_detr_swin_large_1x_coco.py). The neck takes stages 1..3.
# Official: 56.9 box AP; checkpoint co_deformable_detr_swin_large_1x_coco.pth (official model
# zoo). ImageNet weights: the original Swin release's
# swin_large_patch4_window12_384_22k.pth, put in checkpoints/.
_base_ = ['./co_deformable_detr_r50_8xb2_1x_coco.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinTransformer',
        pretrain_img_size=384,
        embed_dims=192,
        depths=(2, 2, 18, 2),
        num_heads=(6, 12, 24, 48),
        window_size=12,
        drop_path_rate=0.3,
        out_indices=(1, 2, 3),
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/swin_large_patch4_window12_384_22k.pth')),
    neck=dict(in_channels=[384, 768, 1536]))

optim_wrapper = dict(optimizer=dict(weight_decay=0.05))
