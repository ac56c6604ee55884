# Co-Deformable-DETR Swin-B, K = 2, 12 epochs on COCO, 8 GPUs x 2 images, AdamW weight decay
# 0.05 (official co_deformable_detr_swin_base_1x_coco.py). The neck takes stages 1..3.
# Official: 55.5 box AP; checkpoint co_deformable_detr_swin_base_1x_coco.pth (official model
# zoo). ImageNet weights: the original Swin release's
# swin_base_patch4_window12_384_22k.pth, put in checkpoints/.
_base_ = ['./co_deformable_detr_r50_8xb2_1x_coco.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinTransformer',
        pretrain_img_size=384,
        embed_dims=128,
        depths=(2, 2, 18, 2),
        num_heads=(4, 8, 16, 32),
        window_size=12,
        drop_path_rate=0.2,
        out_indices=(1, 2, 3),
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/swin_base_patch4_window12_384_22k.pth')),
    neck=dict(in_channels=[256, 512, 1024]))

optim_wrapper = dict(optimizer=dict(weight_decay=0.05))
