# LVIS v1 instance segmentation (1203 classes) with LSJ and Copy-Paste, as the official
# co_dino_5scale_lsj_r50_1x_lvis.py: the COCO instance LSJ recipe (coco_instance_lsj.py)
# over LVIS annotations, without repeat-factor sampling (the official LSJ config has none).
# Image paths come from each image's `coco_url`, so `data_root` holds the COCO image folders.
_base_ = './coco_instance_lsj.py'

dataset_type = 'LVISV1Dataset'
data_root = 'data/lvis_v1/'

train_dataloader = dict(dataset=dict(dataset=dict(
    type=dataset_type,
    data_root=data_root,
    ann_file='annotations/lvis_v1_train.json',
    data_prefix=dict(img=''))))
val_dataloader = dict(dataset=dict(
    type=dataset_type,
    data_root=data_root,
    ann_file='annotations/lvis_v1_val.json',
    data_prefix=dict(img='')))
test_dataloader = val_dataloader

val_evaluator = dict(
    _delete_=True,
    type='LVISMetric',
    ann_file=data_root + 'annotations/lvis_v1_val.json',
    metric=['bbox', 'segm'])  # max_dets=300 per image, masks encoded as they arrive
test_evaluator = val_evaluator
