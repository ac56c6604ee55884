# Co-DINO R50 (K = 2: Faster R-CNN + ATSS) on LVIS v1: 1203 classes, 12 epochs, 8 GPUs x 2.
# The model keeps up to 1000 detections per image (REFERENCE.md); LVISMetric scores the
# standard LVIS AP (its max_dets=300 per image) unless `val_evaluator.max_dets` is raised.
_base_ = [
    '../_base_/models/co_dino_5scale_r50.py',
    '../_base_/datasets/lvis_v1_detection.py',
    '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]

max_per_img = 1000
model = dict(
    num_classes=1203,  # LVIS v1 categories; every head takes it
    test_cfg=dict(query_head=dict(max_per_img=max_per_img)))

# The LVIS set sits inside ClassBalancedDataset (lvis_v1_detection.py).
train_dataloader = dict(dataset=dict(dataset=dict(filter_cfg=dict(filter_empty_gt=False))))
