# Co-Conditional-DETR-C5 R50, K = 2 aux heads (ATSS "atss" + Faster R-CNN "rcnn"), 36 epochs on
# COCO, 8 GPUs x 2 images. Paper Table 2: 41.8 box AP (K = 0 39.4, K = 1 41.5).
_base_ = [
    '../_base_/models/co_conditional_detr_c5_r50.py',
    '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/schedule_3x.py',
    '../_base_/default_runtime.py',
]

# Conditional-DETR's optimiser: AdamW lr 1e-4, backbone 1e-5, weight decay 1e-4, clip 0.1
# (lr x0.1 after epoch 30 of 36: the Co-DETR 36-epoch schedule).
optim_wrapper = dict(optimizer=dict(lr=1e-4))
