# Objects365 v1 boxes (365 classes) with the DETR augmentation of coco_detection.py.
_base_ = './coco_detection.py'

dataset_type = 'Objects365V1Dataset'
data_root = 'data/Objects365/Obj365_v1/'

train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/objects365_train.json',
        data_prefix=dict(img='train/')))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/objects365_val.json',
        data_prefix=dict(img='val/')))
test_dataloader = val_dataloader

val_evaluator = dict(ann_file=data_root + 'annotations/objects365_val.json')
test_evaluator = val_evaluator
