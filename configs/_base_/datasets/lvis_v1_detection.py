# LVIS v1 boxes (1203 classes) with the DETR augmentation of coco_detection.py.
# Image paths come from each image's `coco_url` (train2017/... or val2017/...), so
# `data_root` is the folder holding the COCO image folders and `data_prefix` stays empty.
# No repeat-factor sampling here: codetr has no RepeatFactorDataset yet.
_base_ = './coco_detection.py'

dataset_type = 'LVISV1Dataset'
data_root = 'data/lvis_v1/'

train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/lvis_v1_train.json',
        data_prefix=dict(img='')))
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
