# COCO 2017 instance segmentation with large-scale jitter and Copy-Paste, the official
# Co-DETR LSJ recipe (co_dino_5scale_lsj_r50_1x_coco.py): each image is loaded with its
# masks, resized by 0.1..2.0, cropped (boxes recomputed from the cropped masks), flipped and
# padded to 1024 x 1024 inside the wrapped dataset; MultiImageMixDataset then pastes up to
# 100 objects of a second such image onto it (CopyPaste) before packing.
dataset_type = 'CocoDataset'
data_root = 'data/coco/'
backend_args = None

image_size = (1024, 1024)  # (w, h), official LSJ size
lsj_pad_value = (114, 114, 114)  # official LSJ padding, raw BGR pixels

load_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute', crop_size=image_size, recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Pad', size=image_size, pad_val=dict(img=lsj_pad_value)),
]
train_pipeline = [
    dict(type='CopyPaste', max_num_pasted=100),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=lsj_pad_value)),
    # after Resize: the GT (drawn by the visualiser) stays in original pixels
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# tools/test.py --tta: plain and flipped views; the flip comes before the padding so that
# it mirrors the image itself; DetTTAModel flips each view's masks back with its boxes.
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=image_size, keep_ratio=True)],
        [dict(type='RandomFlip', prob=0.0), dict(type='RandomFlip', prob=1.0)],
        [dict(type='Pad', size=image_size, pad_val=dict(img=lsj_pad_value))],
        [dict(type='LoadAnnotations', with_bbox=True, with_mask=True)],
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
    dataset=dict(
        type='MultiImageMixDataset',
        dataset=dict(
            type=dataset_type,
            data_root=data_root,
            ann_file='annotations/instances_train2017.json',
            data_prefix=dict(img='train2017/'),
            filter_cfg=dict(filter_empty_gt=False, min_size=32),  # official: keep them
            pipeline=load_pipeline,
            backend_args=backend_args),
        pipeline=train_pipeline))
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
    metric=['bbox', 'segm'],
    format_only=False)
test_evaluator = val_evaluator
