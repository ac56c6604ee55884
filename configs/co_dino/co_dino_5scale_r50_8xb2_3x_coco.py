# Co-DINO R50 with DETR-style augmentation, 36 epochs with lr x0.1 after epoch 30
# (the official 3x schedule, configs/_base_/schedules/schedule_3x.py). Paper: 54.8 AP.
_base_ = ['./co_dino_5scale_r50_8xb2_1x_coco.py']

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[30],
         gamma=0.1),
]
