# Co-Deformable-DETR Swin-L with 900 queries (top 300 kept at test), 36 epochs (lr x0.1 after
# epoch 30), drop path 0.6 (official co_deformable_detr_swin_large_900q_3x_coco.py).
# Official: 58.5 box AP; checkpoint co_deformable_detr_swin_large_900q_3x_coco.pth (official
# model zoo).
_base_ = ['./co_deformable_detr_swin_l_8xb2_1x_coco.py']

model = dict(
    backbone=dict(drop_path_rate=0.6),
    query_head=dict(num_queries=900),
    test_cfg=dict(query_head=dict(max_per_img=300)))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[30],
         gamma=0.1),
]
