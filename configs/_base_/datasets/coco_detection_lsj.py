# COCO 2017 boxes with large-scale jitter (LSJ), as in Co-DETR's *_lsj_* configs: every
# training and test image leaves the pipeline as exactly 1024 x 1024.
#
# Padding: the pipeline pads with raw BGR value 114 (before normalisation). Model configs
# pair this with `DetDataPreprocessor(batch_augments=[dict(type='BatchFixedSizePad',
# size=image_size)])`, which then has nothing left to pad. `Pad` sets `img_shape` to the
# padded 1024 x 1024, so normalised box targets are relative to the padded image.
# The official config adds CopyPaste, which needs instance masks: coco_instance_lsj.py has it.
dataset_type = 'CocoDataset'
data_root = 'data/coco/'
backend_args = None

image_size = (1024, 1024)  # (w, h), official LSJ size
lsj_pad_value = (114, 114, 114)  # official LSJ padding, raw BGR pixels

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute', crop_size=image_size, recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Pad', size=image_size, pad_val=dict(img=lsj_pad_value)),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=lsj_pad_value)),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]

# tools/test.py --tta: plain and flipped views; the flip comes before the padding so that
# it mirrors the image itself.
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=image_size, keep_ratio=True)],
        [dict(type='RandomFlip', prob=0.0), dict(type='RandomFlip', prob=1.0)],
        [dict(type='Pad', size=image_size, pad_val=dict(img=lsj_pad_value))],
        [dict(type='LoadAnnotations', with_bbox=True)],
        [dict(type='PackDetInputs',
              meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
                         'flip', 'flip_direction'))],
    ]),
]

train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    # No AspectRatioBatchSampler: every image leaves the pipeline 1024 x 1024, so grouping
    # by orientation would save no padding.
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        # LSJ crops may leave an image without boxes; the official config keeps them.
        filter_cfg=dict(filter_empty_gt=False, min_size=32),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val2017.json',
    metric='bbox',
    format_only=False)
test_evaluator = val_evaluator
