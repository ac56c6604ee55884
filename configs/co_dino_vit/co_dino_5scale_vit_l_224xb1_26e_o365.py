# Co-DETR ViT-L intermediate training on Objects365 v2 (365 classes), from EVA-02 weights,
# before the COCO fine-tuning (co_dino_5scale_vit_l_64xb1_12e_coco.py). No official config
# or AP was published; the settings are the paper's (appendix, "system-level comparison on
# COCO"): 26 epochs, lr 2.5e-4 x0.1 after epoch 24, total batch 224, short side 480..1024
# with the long side <= 1280, 1500 queries and 1000 denoising queries. Everything else
# (optimizer, layer decay, EMA, aux heads) is the COCO recipe's.
# Put EVA-02 ViT-L (MIM, patch 14 -> 16) in checkpoints/; it is resized on load.
_base_ = ['./co_dino_5scale_vit_l_64xb1_12e_coco.py']

model = dict(
    num_classes=365,  # Objects365; every head takes it
    backbone=dict(init_cfg=dict(_delete_=True, type='Pretrained',
                                checkpoint='checkpoints/eva02_L_pt_m38m_p14to16.pt')),
    query_head=dict(dn_cfg=dict(group_cfg=dict(num_dn_queries=1000))))

o365_scales = [(short, 1280) for short in range(480, 1025, 32)]
data_root = 'data/Objects365/Obj365_v2/'
train_dataloader = dict(dataset=dict(
    type='Objects365V2Dataset', data_root=data_root,
    ann_file='annotations/zhiyuan_objv2_train.json', data_prefix=dict(img='train/'),
    pipeline=[dict(type='LoadImageFromFile'),
              dict(type='LoadAnnotations', with_bbox=True),
              dict(type='RandomFlip', prob=0.5),
              dict(type='RandomChoiceResize', scales=o365_scales, keep_ratio=True),
              dict(type='PackDetInputs')]))
val_dataloader = dict(dataset=dict(
    type='Objects365V2Dataset', data_root=data_root,
    ann_file='annotations/zhiyuan_objv2_val.json', data_prefix=dict(img='val/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/zhiyuan_objv2_val.json')
test_evaluator = val_evaluator

max_epochs = 26
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[24],
         gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(lr=2.5e-4))
auto_scale_lr = dict(base_batch_size=224)
