# The quick-start Co-DINO without aux heads (K = 0): plain DINO with the same backbone,
# transformer, data and schedule, the baseline for the K = 1 / 2 quick starts.
_base_ = ['./co_dino_r18_k2_quickstart_synthetic.py']

model = dict(
    adapter=None,
    aux_heads=dict(_delete_=True),
    train_cfg=dict(_delete_=True, query_head={{_base_.model.train_cfg.query_head}}),
    test_cfg=dict(_delete_=True, eval_module='detr',
                  query_head={{_base_.model.test_cfg.query_head}}))
