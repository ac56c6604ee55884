# Co-DETR ViT-L on LVIS v1 (1203 classes) with large-scale jitter at 1536 x 1536: the official
# co_dino_5scale_lsj_vit_large_lvis.py (published as a test config). Official: 68.0 box AP
# on LVIS v1 val (model zoo; 67.9 in the paper, Table 7). It differs from the COCO recipe:
# window 16 with global attention in blocks 2, 5, ..., 23, drop path 0.3, 900 queries, the
# 2-FC RoI head, 16 epochs (lr x0.1 after epochs 9 and 15), AdamW 5e-5 with weight decay
# 0.05 and backbone lr x0.1 instead of layer decay, no EMA, 1000 detections per image.
# The paper starts it from an Objects365 model trained with LSJ (not this repository's
# o365 config, which uses DETR augmentation); CopyPaste (needs masks) is left out.
_base_ = [
    '../_base_/models/co_dino_5scale_vit_l.py',
    '../_base_/datasets/lvis_v1_detection.py',
    '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]

image_size = (1536, 1536)
model = dict(
    num_classes=1203,  # LVIS v1; every head takes it
    data_preprocessor=dict(batch_augments=[dict(type='BatchFixedSizePad', size=image_size)]),
    backbone=dict(drop_path_rate=0.3, window_size=16,
                  window_block_indexes=[i for i in range(24) if i % 3 != 2]),
    query_head=dict(num_queries=900),
    aux_heads=dict(
        rcnn=dict(roi=dict(bbox_head=dict(
            _delete_=True, type='Shared2FCBBoxHead', in_channels=256, fc_out_channels=1024,
            roi_feat_size=7, reg_class_agnostic=False,
            reg_decoded_bbox=True,
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                            target_stds=[0.1, 0.1, 0.2, 0.2]),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='GIoULoss', loss_weight=10.0))))))

lsj_pad = dict(img=(114, 114, 114))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute', crop_size=image_size, recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Pad', size=image_size, pad_val=lsj_pad),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='Pad', size=image_size, pad_val=lsj_pad),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# tools/test.py --tta: the test scale, plain and flipped
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=image_size, keep_ratio=True)],
        [dict(type='RandomFlip', prob=0.0), dict(type='RandomFlip', prob=1.0)],
        [dict(type='Pad', size=image_size, pad_val=lsj_pad)],
        [dict(type='LoadAnnotations', with_bbox=True)],
        [dict(type='PackDetInputs',
              meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
                         'flip', 'flip_direction'))],
    ]),
]
train_dataloader = dict(batch_size=1, num_workers=1, batch_sampler=None, dataset=dict(
    dataset=dict(pipeline=train_pipeline, filter_cfg=dict(filter_empty_gt=False))))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

max_epochs = 16
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[9, 15],
         gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(lr=5e-5, weight_decay=0.05))  # backbone lr x0.1 (base)
auto_scale_lr = dict(base_batch_size=64)
