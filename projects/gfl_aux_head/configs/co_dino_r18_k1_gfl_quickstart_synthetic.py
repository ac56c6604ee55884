# The quick-start Co-DINO (ResNet-18 from scratch, width 64, 1 encoder / 2 decoder layers) with
# the GFL aux head alone (K = 1), on the synthetic shapes; trains on a CPU in minutes:
#   python tools/misc/make_synthetic_dataset.py --out data/synthetic --train 640 \
#       --val 64 --min-size 128 --max-size 160
#   python tools/train.py projects/gfl_aux_head/configs/co_dino_r18_k1_gfl_quickstart_synthetic.py
_base_ = ['../../../configs/quickstart/co_dino_r18_k2_quickstart_synthetic.py']

custom_imports = dict(imports=['projects.gfl_aux_head'], allow_failed_imports=False)

embed_dims = 64
model = dict(
    aux_heads=dict(_delete_=True, gfl=dict(
        type='CoGFLHead', in_channels=embed_dims,
        feat_channels=embed_dims, norm_cfg=dict(type='GN', num_groups=16),
        # 32 px anchors at stride 8, as the quick-start ATSS head
        anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=4,
                              scales_per_octave=1, strides=[8, 16, 32, 64]))),
    train_cfg=dict(_delete_=True, query_head={{_base_.model.train_cfg.query_head}},
                   gfl=dict(assigner=dict(type='ATSSAssigner', topk=9))),
    test_cfg=dict(_delete_=True, eval_module='detr',
                  query_head={{_base_.model.test_cfg.query_head}},
                  gfl=dict(score_thr=0.0)))
