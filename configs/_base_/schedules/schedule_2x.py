# 24 epochs, lr x0.1 after epoch 20 (official Co-DINO Swin-L 24-epoch config); else as 1x.
_base_ = './schedule_1x.py'
max_epochs = 24
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[20],
         gamma=0.1),
]
