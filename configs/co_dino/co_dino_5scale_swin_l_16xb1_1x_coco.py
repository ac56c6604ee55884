# Co-DINO Swin-L, 5 scales, K = 2, 12 epochs on COCO with DETR-style augmentation; 16 GPUs x 1
# image (official co_dino_5scale_swin_large_1x_coco.py).
# Official: 58.9 box AP; checkpoint co_dino_5scale_swin_large_1x_coco.pth (official model zoo;
# the MMDetection port re-hosts it as co_dino_5scale_swin_large_1x_coco-27c13da4.pth). Either
# converts on load: --cfg-options load_from=FILE load_from_convert=official.
_base_ = [
    '../_base_/models/co_dino_5scale_swin_l.py',
    '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]

# The official config keeps images without boxes (filter_empty_gt=False).
train_dataloader = dict(batch_size=1, num_workers=1,
                        dataset=dict(filter_cfg=dict(filter_empty_gt=False)))
auto_scale_lr = dict(base_batch_size=16)  # 16 GPUs x 1 image
