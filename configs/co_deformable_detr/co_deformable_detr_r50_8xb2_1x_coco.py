# Co-Deformable-DETR R50, K = 2 aux heads (Faster R-CNN "rcnn" + ATSS "atss"), 12 epochs on
# COCO, 8 GPUs x 2 images. Paper: 49.5 box AP (Deformable-DETR++ R50, K=2, 12 ep; REFERENCE.md).
_base_ = [
    '../_base_/models/co_deformable_detr_r50.py',
    '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]

# The official config keeps images without boxes (filter_empty_gt=False).
train_dataloader = dict(dataset=dict(filter_cfg=dict(filter_empty_gt=False)))

# Deformable attention's offsets and reference points learn at a tenth of the rate, as the
# backbone (official co_deformable_detr_r50_1x_coco.py).
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        'backbone': dict(lr_mult=0.1),
        'sampling_offsets': dict(lr_mult=0.1),
        'reference_points': dict(lr_mult=0.1),
    }))
