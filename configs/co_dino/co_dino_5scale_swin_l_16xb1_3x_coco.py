# Co-DINO Swin-L, DETR augmentation, 36 epochs (lr x0.1 after epoch 30), drop path 0.6
# (official co_dino_5scale_swin_large_3x_coco.py).
# Official: 60.0 box AP; checkpoint co_dino_5scale_swin_large_3x_coco.pth (official model zoo;
# re-hosted by the MMDetection port as co_dino_5scale_swin_large_3x_coco-d7a6d8af.pth).
_base_ = ['./co_dino_5scale_swin_l_16xb1_1x_coco.py']

model = dict(backbone=dict(drop_path_rate=0.6))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[30],
         gamma=0.1),
]
