# Co-DINO R50 with 9 encoder layers, LSJ 1024, 36 epochs (lr x0.1 after epoch 30)
# (official co_dino_5scale_9encoder_lsj_r50_3x_coco.py).
# Official: 55.4 box AP (6 layers: 54.8); checkpoint co_dino_5scale_9encoder_lsj_r50_3x_coco.pth
# (official model zoo).
_base_ = ['./co_dino_5scale_9enc_r50_lsj_8xb2_1x_coco.py']

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[30],
         gamma=0.1),
]
