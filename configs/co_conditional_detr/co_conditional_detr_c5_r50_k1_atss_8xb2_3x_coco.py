# Co-Conditional-DETR-C5 R50 with one aux head, ATSS (K = 1). Paper Table 2: 41.5 box AP.
_base_ = ['./co_conditional_detr_c5_r50_k2_atss_rcnn_8xb2_3x_coco.py']

model = dict(
    aux_heads=dict(_delete_=True, atss={{_base_.model.aux_heads.atss}}),
    train_cfg=dict(_delete_=True, query_head={{_base_.model.train_cfg.query_head}},
                   atss={{_base_.model.train_cfg.atss}}),
    test_cfg=dict(_delete_=True, eval_module='detr',
                  query_head={{_base_.model.test_cfg.query_head}},
                  atss={{_base_.model.test_cfg.atss}}))
