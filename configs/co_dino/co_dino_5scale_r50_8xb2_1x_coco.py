# Co-DINO R50, 5 scales, K = 2 aux heads (Faster R-CNN "rcnn" + ATSS "atss"), 12 epochs on
# COCO with DETR-style augmentation; 8 GPUs x 2 images. Paper: 52.1 box AP (REFERENCE.md).
#   python tools/train.py configs/co_dino/co_dino_5scale_r50_8xb2_1x_coco.py
# Swap or tune an aux head from the command line, e.g.
#   --cfg-options model.aux_heads.atss.loss_bbox.loss_weight=1.0
_base_ = [
    '../_base_/models/co_dino_5scale_r50.py',
    '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]

# The official config keeps images without boxes (filter_empty_gt=False).
train_dataloader = dict(dataset=dict(filter_cfg=dict(filter_empty_gt=False)))
