# Co-DINO Swin-L with large-scale jitter at 1280 x 1280 (the R50 LSJ configs use 1024), 12
# epochs, 16 GPUs x 1 image (official co_dino_5scale_lsj_swin_large_1x_coco.py, without
# CopyPaste, which needs instance masks).
# Official: 59.3 box AP; checkpoint co_dino_5scale_lsj_swin_large_1x_coco.pth (official model
# zoo; re-hosted by the MMDetection port as co_dino_5scale_lsj_swin_large_1x_coco-3af73af2.pth).
_base_ = [
    '../_base_/models/co_dino_5scale_swin_l.py',
    '../_base_/datasets/coco_detection_lsj.py',
    '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]

image_size = (1280, 1280)  # official Swin-L LSJ size
pad_value = (114, 114, 114)
model = dict(
    data_preprocessor=dict(batch_augments=[dict(type='BatchFixedSizePad', size=image_size)]))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute', crop_size=image_size, recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Pad', size=image_size, pad_val=dict(img=pad_value)),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=pad_value)),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=image_size, keep_ratio=True)],
        [dict(type='RandomFlip', prob=0.0), dict(type='RandomFlip', prob=1.0)],
        [dict(type='Pad', size=image_size, pad_val=dict(img=pad_value))],
        [dict(type='LoadAnnotations', with_bbox=True)],
        [dict(type='PackDetInputs',
              meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
                         'flip', 'flip_direction'))],
    ]),
]
train_dataloader = dict(batch_size=1, num_workers=1, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
auto_scale_lr = dict(base_batch_size=16)  # 16 GPUs x 1 image
