# Co-DINO R50 with one aux head, ATSS (K = 1). Paper (Deformable-DETR++ R50, 12 ep): K=1 ATSS
# 48.7 vs K=2 49.5 AP.
_base_ = ['./co_dino_5scale_r50_8xb2_1x_coco.py']

model = dict(
    aux_heads=dict(_delete_=True, atss={{_base_.model.aux_heads.atss}}),
    train_cfg=dict(_delete_=True, query_head={{_base_.model.train_cfg.query_head}},
                   atss={{_base_.model.train_cfg.atss}}),
    test_cfg=dict(_delete_=True, eval_module='detr',
                  query_head={{_base_.model.test_cfg.query_head}},
                  atss={{_base_.model.test_cfg.atss}}))
