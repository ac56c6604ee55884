# DAB-DETR-C5 R50 without aux heads (K = 0): the plain baseline of Table 2, same
# backbone, transformer, data and schedule. Paper Table 2: 41.2 box AP.
_base_ = ['./co_dab_detr_c5_r50_k2_atss_rcnn_8xb2_3x_coco.py']

model = dict(
    adapter=None,
    aux_heads=dict(_delete_=True),
    train_cfg=dict(_delete_=True, query_head={{_base_.model.train_cfg.query_head}}),
    test_cfg=dict(_delete_=True, eval_module='detr',
                  query_head={{_base_.model.test_cfg.query_head}}))
