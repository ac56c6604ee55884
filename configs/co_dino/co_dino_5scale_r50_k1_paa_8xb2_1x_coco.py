# Co-DINO R50 with one aux head, PAA (K = 1): one square anchor per location, a loose max-IoU
# rule (IoU >= 0.1) for the candidates, then per GT box a 2-component Gaussian mixture on the
# candidates' losses (top 9 per level) picks the positives; focal loss, GIoU weighted by the
# predicted box's IoU, IoU-prediction BCE; 1 stacked conv (Co-DETR's aux setting). Paper Table 8
# (Deformable-DETR R50, K = 1, 36 ep; baseline 43.3): PAA 46.5 AP (AP50 64.6, AP75 50.7).
_base_ = ['./co_dino_5scale_r50_8xb2_1x_coco.py']

model = dict(
    aux_heads=dict(_delete_=True, paa=dict(
        type='CoPAAHead',
        in_channels=256,
        stacked_convs=1,
        feat_channels=256,
        anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=8,
                              scales_per_octave=1, strides=[4, 8, 16, 32, 64, 128]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                        target_stds=[0.1, 0.1, 0.2, 0.2]),
        topk=9,
        score_voting=True,  # test time only (eval_module='one-stage'): voted boxes, same scores
        # PAA's own weights (MMDetection paa_r50_fpn_1x_coco.py); CoDETR multiplies them by
        # lambda_2 x 6 decoder layers = 12, as the official configs' folded weights do.
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=1.3),
        loss_iou=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=0.5))),
    train_cfg=dict(_delete_=True, query_head={{_base_.model.train_cfg.query_head}}, paa=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.1, neg_iou_thr=0.1, min_pos_iou=0,
                      ignore_iof_thr=-1),
        allowed_border=-1, pos_weight=-1)),
    test_cfg=dict(_delete_=True, eval_module='detr',
                  query_head={{_base_.model.test_cfg.query_head}},
                  paa=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.0,
                           nms=dict(type='nms', iou_threshold=0.6), max_per_img=100)))
