# Co-DINO R50 with one aux head, RetinaNet (K = 1): 9 anchors per location, max-IoU assignment
# (positive IoU >= 0.5, negative < 0.4), focal loss and GIoU, 1 stacked conv (Co-DETR's aux
# setting). Paper (Deformable-DETR R50, K=1, 36 ep): RetinaNet 46.1 vs ATSS 46.8 AP.
_base_ = ['./co_dino_5scale_r50_8xb2_1x_coco.py']

model = dict(
    aux_heads=dict(_delete_=True, retina=dict(
        type='CoRetinaHead',
        in_channels=256,
        stacked_convs=1,
        feat_channels=256,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                              ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64, 128]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                        target_stds=[0.1, 0.1, 0.2, 0.2]),
        # Same loss weights as the ATSS aux head (official / 12; CoDETR applies lambda_2 x 6).
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0))),
    train_cfg=dict(_delete_=True, query_head={{_base_.model.train_cfg.query_head}}, retina=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                      ignore_iof_thr=-1),
        allowed_border=-1, pos_weight=-1)),
    test_cfg=dict(_delete_=True, eval_module='detr',
                  query_head={{_base_.model.test_cfg.query_head}},
                  retina=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.0,
                              nms=dict(type='nms', iou_threshold=0.6), max_per_img=100)))
