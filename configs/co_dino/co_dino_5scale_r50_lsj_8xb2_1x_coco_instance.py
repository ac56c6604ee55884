# Co-DINO R50 instance segmentation on COCO: LSJ (1024) with Copy-Paste, a Mask R-CNN aux
# head (CoMaskRCNNHead, K = 2 with ATSS), box and mask AP. 12 epochs, 8 GPUs x 2 images.
# The official release trains masks only with ViT-L (co_dino_5scale_vit_large_coco_instance:
# box 65.8 / mask 56.6 AP on val2017, 66.0 / 57.1 on test-dev) and a RefineMask head; no
# official R50 mask number exists. Its R50 LSJ box model (same recipe, no masks) gets
# 52.1 box AP at 1x. The mask head here is the paper's plain Mask R-CNN FCN head
# (_base_/models/co_dino_5scale_r50_instance.py).
_base_ = [
    '../_base_/models/co_dino_5scale_r50_instance.py',
    '../_base_/datasets/coco_instance_lsj.py',
    '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]

image_size = (1024, 1024)  # official LSJ size
model = dict(data_preprocessor=dict(batch_augments=[
    dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]))
