# Co-DINO R50 with one aux head, GFL (K = 1): ATSS assignment, quality focal loss on the joint
# class-IoU score, distribution focal loss over 0..16 strides per box side, GIoU on the decoded
# boxes, 1 stacked conv (Co-DETR's aux setting). Paper Table 8 (Deformable-DETR R50, K = 1,
# 36 ep; baseline 43.3): GFL 46.5 AP (AP50 65.0, AP75 51.0), ATSS 46.8.
#   python tools/train.py projects/gfl_aux_head/configs/co_dino_5scale_r50_k1_gfl_8xb2_1x_coco.py
_base_ = ['../../../configs/co_dino/co_dino_5scale_r50_8xb2_1x_coco.py']

# registers CoGFLHead; run from the repository root (tools/*.py put the working directory on
# sys.path) or put the root on PYTHONPATH
custom_imports = dict(imports=['projects.gfl_aux_head'], allow_failed_imports=False)

model = dict(
    aux_heads=dict(_delete_=True, gfl=dict(
        type='CoGFLHead',
        in_channels=256,
        stacked_convs=1,
        feat_channels=256,
        reg_max=16,
        anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=8,
                              scales_per_octave=1, strides=[4, 8, 16, 32, 64, 128]),
        # GFL's own weights (MMDetection gfl_r50_fpn_1x_coco.py); CoDETR multiplies them by
        # lambda_2 x 6 decoder layers = 12, as the official configs' folded weights do.
        loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
        loss_dfl=dict(type='DistributionFocalLoss', loss_weight=0.25),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0))),
    train_cfg=dict(_delete_=True, query_head={{_base_.model.train_cfg.query_head}},
                   gfl=dict(assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1,
                            pos_weight=-1)),
    test_cfg=dict(_delete_=True, eval_module='detr',
                  query_head={{_base_.model.test_cfg.query_head}},
                  gfl=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.0,
                           nms=dict(type='nms', iou_threshold=0.6), max_per_img=100)))
