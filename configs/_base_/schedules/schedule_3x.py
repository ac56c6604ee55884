# 36 epochs, lr x0.1 after epoch 30 (official Co-DETR 36-epoch configs); else as schedule_1x.
_base_ = './schedule_1x.py'
max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[30],
         gamma=0.1),
]
