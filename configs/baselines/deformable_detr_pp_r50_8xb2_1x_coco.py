# Deformable-DETR++ R50 (two-stage + box refinement), 4 scales, 12 epochs on COCO:
# Co-Deformable-DETR's one-to-one branch without aux heads (K = 0). 8 GPUs x 2 images.
_base_ = [
    '../_base_/models/deformable_detr_pp_r50.py',
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
