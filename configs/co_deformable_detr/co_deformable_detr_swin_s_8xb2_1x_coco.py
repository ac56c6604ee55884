# Co-Deformable-DETR Swin-S, K = 2, 12 epochs on COCO, 8 GPUs x 2 images, AdamW weight decay
# 0.05 (official co_deformable_detr_swin_small_1x_coco.py). The neck takes stages 1..3.
# Official: 53.4 box AP; checkpoint co_deformable_detr_swin_small_1x_coco.pth (official model
# zoo). ImageNet weights: the original Swin release's
# swin_small_patch4_window7_224.pth, put in checkpoints/.
_base_ = ['./co_deformable_detr_r50_8xb2_1x_coco.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinTransformer',
        pretrain_img_size=224,
        embed_dims=96,
        depths=(2, 2, 18, 2),
        num_heads=(3, 6, 12, 24),
        window_size=7,
        drop_path_rate=0.2,
        out_indices=(1, 2, 3),
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/swin_small_patch4_window7_224.pth')),
    neck=dict(in_channels=[192, 384, 768]))

optim_wrapper = dict(optimizer=dict(weight_decay=0.05))
