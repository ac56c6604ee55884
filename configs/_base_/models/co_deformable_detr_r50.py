# Co-Deformable-DETR R50, K = 2 aux heads: the Deformable-DETR++ one-to-one branch
# (deformable_detr_pp_r50.py) plus the multi-scale adapter, a Faster R-CNN aux head ("rcnn") and
# an ATSS aux head ("atss"), in the official order. Numbers from the official
# co_deformable_detr_r50_1x_coco.py (REFERENCE.md). The neck gives 4 levels (strides 8..64); the
# adapter adds stride 128. Aux loss weights are the official ones / 12, as in
# co_dino_5scale_r50.py: CoDETR multiplies them by lambda_2 x 6 decoder layers.
_base_ = ['./deformable_detr_pp_r50.py']

embed_dims = 256
# Strides of the adapter pyramid: the 4 neck levels (8..64) plus the adapter's extra level.
pyramid_strides = [8, 16, 32, 64, 128]

model = dict(
    lambda_1=1.0,  # positive-query branches (paper eq. 6)
    lambda_2=2.0,  # aux-head losses (paper eq. 6)
    adapter=dict(_delete_=True, type='MultiScaleAdapter', in_channels=embed_dims, num_extra=1),
    aux_heads=dict(
        rcnn=dict(
            type='CoRPNRoIHead',
            rpn=dict(
                in_channels=embed_dims,
                feat_channels=embed_dims,
                anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                      scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                      strides=pyramid_strides),
                bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                                target_stds=[1.0, 1.0, 1.0, 1.0]),
                loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
                loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
            roi=dict(
                # RoIs pool from the 4 encoder levels only (official featmap_strides).
                bbox_roi_extractor=dict(
                    type='SingleRoIExtractor',
                    roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
                    out_channels=embed_dims, featmap_strides=pyramid_strides[:4],
                    finest_scale=112),
                bbox_head=dict(
                    in_channels=embed_dims, fc_out_channels=1024, roi_feat_size=7,
                    bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                                    target_means=[0.0, 0.0, 0.0, 0.0],
                                    target_stds=[0.1, 0.1, 0.2, 0.2]),
                    reg_class_agnostic=False,
                    reg_decoded_bbox=True,
                    loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                    loss_bbox=dict(type='GIoULoss', loss_weight=10.0)))),
        atss=dict(
            type='CoATSSHead',
            in_channels=embed_dims,
            stacked_convs=1,  # Co-DETR's aux heads stack 1 conv, not ATSS's 4
            feat_channels=embed_dims,
            anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=8,
                                  scales_per_octave=1, strides=pyramid_strides),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                            target_stds=[0.1, 0.1, 0.2, 0.2]),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                          loss_weight=1.0),
            loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
            loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    ),
    train_cfg=dict(
        rcnn=dict(
            rpn=dict(
                assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3,
                              min_pos_iou=0.3, match_low_quality=True, ignore_iof_thr=-1),
                sampler=dict(type='RandomSampler', num=256, pos_fraction=0.5, neg_pos_ub=-1,
                             add_gt_as_proposals=False),
                allowed_border=-1,
                pos_weight=-1),
            rpn_proposal=dict(nms_pre=4000, max_per_img=1000,
                              nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
            rcnn=dict(
                assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5,
                              min_pos_iou=0.5, match_low_quality=False, ignore_iof_thr=-1),
                sampler=dict(type='RandomSampler', num=512, pos_fraction=0.25, neg_pos_ub=-1,
                             add_gt_as_proposals=True),
                pos_weight=-1)),
        atss=dict(assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1,
                  pos_weight=-1)),
    test_cfg=dict(
        # 'detr' (default), 'one-stage' (the ATSS head) or 'two-stage' (Faster R-CNN).
        eval_module='detr',
        rcnn=dict(
            rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7),
                     min_bbox_size=0),
            rcnn=dict(score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)),
        atss=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.0,
                  nms=dict(type='nms', iou_threshold=0.6), max_per_img=100)),
)
