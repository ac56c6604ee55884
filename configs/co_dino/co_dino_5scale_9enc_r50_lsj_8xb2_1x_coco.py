# Co-DINO R50 with 9 encoder layers (all checkpointed), LSJ 1024, 12 epochs, 8 GPUs x 2 images
# (official co_dino_5scale_9encoder_lsj_r50_1x_coco.py).
# Official: 52.6 box AP (6 layers: 52.1); checkpoint co_dino_5scale_9encoder_lsj_r50_1x_coco.pth
# (official model zoo).
_base_ = ['./co_dino_5scale_r50_lsj_8xb2_1x_coco.py']

model = dict(query_head=dict(transformer=dict(encoder=dict(num_layers=9, num_cp=9))))
