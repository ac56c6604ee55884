# K = 2 (Faster R-CNN + ATSS): the default Co-DINO R50, under the name of the aux-head series.
_base_ = ['./co_dino_5scale_r50_8xb2_1x_coco.py']
