# Co-DINO R50 with one aux head, FCOS (K = 1): centre sampling, per-level regress ranges,
# focal loss, GIoU and centerness, 1 stacked conv; each positive point hands on a box of side
# 8 x stride (paper Table 1). Paper (Deformable-DETR R50, K=1, 36 ep): FCOS 46.5 AP.
_base_ = ['./co_dino_5scale_r50_8xb2_1x_coco.py']

model = dict(
    aux_heads=dict(_delete_=True, fcos=dict(
        type='CoFCOSHead',
        in_channels=256,
        stacked_convs=1,
        feat_channels=256,
        strides=[4, 8, 16, 32, 64, 128],  # the adapter pyramid of 5-scale Co-DINO
        center_sampling=True,
        center_sample_radius=1.5,
        norm_on_bbox=True,
        centerness_on_reg=True,
        # Same loss weights as the ATSS aux head (official / 12; CoDETR applies lambda_2 x 6).
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0))),
    train_cfg=dict(_delete_=True, query_head={{_base_.model.train_cfg.query_head}},
                   fcos=dict()),
    test_cfg=dict(_delete_=True, eval_module='detr',
                  query_head={{_base_.model.test_cfg.query_head}},
                  fcos=dict(nms_pre=1000, score_thr=0.0, nms=dict(type='nms', iou_threshold=0.6),
                            max_per_img=100)))
