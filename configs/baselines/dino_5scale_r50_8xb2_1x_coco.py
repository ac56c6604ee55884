# DINO R50, 5 scales, 12 epochs on COCO: Co-DINO's one-to-one branch without aux heads
# (K = 0), the baseline the Co-DETR paper improves on. 8 GPUs x 2 images.
_base_ = [
    '../_base_/models/dino_5scale_r50.py',
    '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]
