# Co-DINO R50 instance segmentation on LVIS v1 (1203 classes): LSJ with Copy-Paste, the
# Mask R-CNN aux head, box and mask AP (LVISMetric, 300 detections per image). 12 epochs,
# 8 GPUs x 2 images; test settings of the official co_dino_5scale_r50_1x_lvis.py (top 300,
# soft-NMS 0.8). The official LVIS mask model is ViT-L only
# (co_dino_5scale_lsj_vit_large_lvis_instance: box 67.3 / mask 60.7 AP on LVIS v1 val, with
# a RefineMask head); no official R50 mask number exists. The mask head here is the paper's
# plain Mask R-CNN FCN head (_base_/models/co_dino_5scale_r50_instance.py).
_base_ = [
    '../_base_/models/co_dino_5scale_r50_instance.py',
    '../_base_/datasets/lvis_v1_instance_lsj.py',
    '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]

image_size = (1024, 1024)
model = dict(
    num_classes=1203,  # LVIS v1 categories; every head takes it (the mask head too)
    data_preprocessor=dict(batch_augments=[
        dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    test_cfg=dict(query_head=dict(max_per_img=300)))
