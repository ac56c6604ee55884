# The quick-start Co-DINO with one aux head, Faster R-CNN (K = 1), the other K = 1 variant of
# the paper's Table 8 beside ATSS (co_dino_r18_k1_quickstart_synthetic.py); benchmarks/
# k_ablation.py trains it against K = 0 / 2.
_base_ = ['./co_dino_r18_k2_quickstart_synthetic.py']

model = dict(
    aux_heads=dict(_delete_=True, rcnn={{_base_.model.aux_heads.rcnn}}),
    train_cfg=dict(_delete_=True, query_head={{_base_.model.train_cfg.query_head}},
                   rcnn={{_base_.model.train_cfg.rcnn}}),
    test_cfg=dict(_delete_=True, eval_module='detr',
                  query_head={{_base_.model.test_cfg.query_head}},
                  rcnn={{_base_.model.test_cfg.rcnn}}))
