# Co-DETR ViT-L (EVA-02) on COCO: the official co_dino_5scale_vit_large_coco.py recipe,
# fine-tuned from the Objects365 model (co_dino_5scale_vit_l_224xb1_26e_o365.py).
# Official: 65.9 box AP on val2017, 66.0 on test-dev (model zoo; paper Table 5).
# 12 epochs, lr x0.1 after epoch 7, 500 linear warm-up iterations from 0.01; AdamW 5e-5,
# weight decay 0.01, layer-wise lr decay 0.8 over the 24 blocks, grad clip 0.1, EMA
# (momentum 1e-4); total batch 64 (paper), 1 image per GPU (official).
#   tools/dist_train.sh configs/co_dino_vit/co_dino_5scale_vit_l_64xb1_12e_coco.py 64 \
#       --cfg-options load_from=work_dirs/co_dino_5scale_vit_l_224xb1_26e_o365/epoch_26.pth
_base_ = [
    '../_base_/models/co_dino_5scale_vit_l.py',
    '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]

# Short side 480..1536 step 32, long side <= 2400 (or resize + crop + the same scales).
vit_scales = [(short, 2400) for short in range(480, 1537, 32)]
crop_scales = [(400, 4200), (500, 4200), (600, 4200)]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoice', transforms=[
        [dict(type='RandomChoiceResize', scales=vit_scales, keep_ratio=True)],
        [dict(type='RandomChoiceResize', scales=crop_scales, keep_ratio=True),
         dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600),
              allow_negative_crop=True),
         dict(type='RandomChoiceResize', scales=vit_scales, keep_ratio=True)]]),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 1280), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# tools/test.py --tta: the test scale, plain and flipped
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(2048, 1280), keep_ratio=True)],
        [dict(type='RandomFlip', prob=0.0), dict(type='RandomFlip', prob=1.0)],
        [dict(type='LoadAnnotations', with_bbox=True)],
        [dict(type='PackDetInputs',
              meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
                         'flip', 'flip_direction'))],
    ]),
]
train_dataloader = dict(batch_size=1, num_workers=1, dataset=dict(
    pipeline=train_pipeline, filter_cfg=dict(filter_empty_gt=False)))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[7], gamma=0.1),
]
optim_wrapper = dict(
    optimizer=dict(lr=5e-5, weight_decay=0.01),
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(_delete_=True, num_layers=24, decay_rate=0.8))
# Averaged weights are the ones validated, tested and kept in `ema_state_dict`.
custom_hooks = [dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=1e-4,
                     update_buffers=True, priority=49)]
auto_scale_lr = dict(base_batch_size=64)
