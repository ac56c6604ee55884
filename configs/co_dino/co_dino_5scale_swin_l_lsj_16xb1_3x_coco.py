# Co-DINO Swin-L, LSJ 1280, 36 epochs (lr x0.1 after epoch 30), drop path 0.5 (as the
# official 2x: official co_dino_5scale_lsj_swin_large_3x_coco.py).
# Official: 60.7 box AP; checkpoint co_dino_5scale_lsj_swin_large_3x_coco.pth (official zoo).
_base_ = ['./co_dino_5scale_swin_l_lsj_16xb1_1x_coco.py']

model = dict(backbone=dict(drop_path_rate=0.5))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[30],
         gamma=0.1),
]
