# Co-DINO Swin-L (ImageNet-22k, 384 px, window 12), 5 scales, K = 2, 12 epochs on COCO with
# DETR-style augmentation; 16 GPUs x 1 image (official co_dino_5scale_swin_large_1x_coco.py).
# Paper: 58.9 box AP. The backbone is timm's Swin-L (TimmSwinTransformer); put the official
# swin_large_patch4_window12_384_22k.pth (or timm's) in checkpoints/ -- it is converted on load.
_base_ = ['./co_dino_5scale_r50_8xb2_1x_coco.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='TimmSwinTransformer',
        model_name='swin_large_patch4_window12_384',  # embed 192, depths 2-2-18-2, window 12
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,  # official Swin-L 1x
        frozen_stages=-1,
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/swin_large_patch4_window12_384_22k.pth')),
    neck=dict(in_channels=[192, 384, 768, 1536]),
    # All 6 encoder layers recompute their activations (official with_cp=6).
    query_head=dict(transformer=dict(encoder=dict(num_cp=6))))

train_dataloader = dict(batch_size=1, num_workers=1)
auto_scale_lr = dict(base_batch_size=16)  # 16 GPUs x 1 image
