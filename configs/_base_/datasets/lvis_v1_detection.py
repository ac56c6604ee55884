# LVIS v1 boxes (1203 classes) with the DETR augmentation of coco_detection.py.
# Image paths come from each image's `coco_url` (train2017/... or val2017/...), so
# `data_root` is the folder holding the COCO image folders and `data_prefix` stays empty.
# Training uses repeat-factor sampling (LVIS paper, as MMDetection's LVIS v1 configs): mmengine's
# ClassBalancedDataset repeats each image ceil(max over its classes c of
# max(1, sqrt(t / f(c)))) times per epoch, f(c) = fraction of training images holding c.
# Settings of the LVIS set itself therefore sit one level down, in
# `train_dataloader.dataset.dataset`. Batches are grouped by aspect ratio (coco_detection.py).
_base_ = './coco_detection.py'

dataset_type = 'LVISV1Dataset'
data_root = 'data/lvis_v1/'
oversample_thr = 1e-3  # t above; MMDetection's LVIS v1 value

train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ClassBalancedDataset',
        oversample_thr=oversample_thr,
        dataset=dict(
            type=dataset_type,
            data_root=data_root,
            ann_file='annotations/lvis_v1_train.json',
            data_prefix=dict(img=''),
            filter_cfg=dict(filter_empty_gt=True, min_size=32),
            pipeline={{_base_.train_pipeline}},
            backend_args={{_base_.backend_args}})))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/lvis_v1_val.json',
        data_prefix=dict(img='')))
test_dataloader = val_dataloader

val_evaluator = dict(
    _delete_=True,
    type='LVISMetric',
    ann_file=data_root + 'annotations/lvis_v1_val.json',
    metric='bbox')
test_evaluator = val_evaluator
