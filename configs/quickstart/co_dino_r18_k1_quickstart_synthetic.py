# The quick-start Co-DINO with one aux head, ATSS (K = 1), for benchmarks against K = 0 / 2.
_base_ = ['./co_dino_r18_k2_quickstart_synthetic.py']

model = dict(
    aux_heads=dict(_delete_=True, atss={{_base_.model.aux_heads.atss}}),
    train_cfg=dict(_delete_=True, query_head={{_base_.model.train_cfg.query_head}},
                   atss={{_base_.model.train_cfg.atss}}),
    test_cfg=dict(_delete_=True, eval_module='detr',
                  query_head={{_base_.model.test_cfg.query_head}},
                  atss={{_base_.model.test_cfg.atss}}))
