# Co-Deformable-DETR Swin-B, 36 epochs (lr x0.1 after epoch 30), drop path 0.4
# (official co_deformable_detr_swin_base_3x_coco.py).
# Official: 57.5 box AP; checkpoint co_deformable_detr_swin_base_3x_coco.pth (official model zoo).
_base_ = ['./co_deformable_detr_swin_b_8xb2_1x_coco.py']

model = dict(backbone=dict(drop_path_rate=0.4))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[30],
         gamma=0.1),
]
