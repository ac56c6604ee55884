# Co-DINO R50 with large-scale jitter: every image is resized by 0.1..2.0, cropped and padded
# to 1024 x 1024 (official co_dino_5scale_r50_lsj_8xb2_1x_coco.py, without CopyPaste, which
# needs instance masks: see co_dino_5scale_r50_lsj_8xb2_1x_coco_instance.py). 12 epochs, 8 GPUs
# x 2 images.
_base_ = [
    '../_base_/models/co_dino_5scale_r50.py',
    '../_base_/datasets/coco_detection_lsj.py',
    '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]

image_size = (1024, 1024)  # official LSJ size
model = dict(
    # The pipeline already pads to 1024; the batch pad keeps every batch that size even if a
    # user's pipeline does not.
    data_preprocessor=dict(batch_augments=[dict(type='BatchFixedSizePad', size=image_size)]))
