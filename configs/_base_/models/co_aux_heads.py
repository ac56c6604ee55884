"""The official Co-DETR aux heads, written once: not a config, a helper the Co-DETR model configs
load with ``run_path('{{ fileDirname }}/co_aux_heads.py')`` (co_dino_5scale_r50.py,
co_deformable_detr_r50.py).

:func:`official_aux_heads` returns the ``aux_heads``, ``train_cfg`` and ``test_cfg`` entries of
``model`` for K = 2 in the official order (RoI heads first, then dense heads): a Faster R-CNN
head (RPN + RoI head, "rcnn") and an ATSS head ("atss"). Every number is the official one
(REFERENCE.md; the official co_dino_5scale_r50 and co_deformable_detr_r50 configs), except the
aux loss weights: the official ones carry a factor 12 = 6 decoder layers x lambda_2, which
CoDETR applies itself (lambda_2 x number of decoder layers), so the weights below are the
official ones / 12. The official configs differ only in the pyramid the heads read, hence the
arguments. Everything else is tuned in the config that calls it, by the usual dict merge.
"""


def official_aux_heads(*, num_classes: int, embed_dims: int, pyramid_strides: list[int],
                       roi_featmap_strides: list[int], roi_finest_scale: int) -> dict:
    """``dict(aux_heads=..., train_cfg=..., test_cfg=...)`` to merge into ``model``.

    Args:
        num_classes: classes of both heads' classifiers.
        embed_dims: channels of every adapter level (both heads' input and hidden width).
        pyramid_strides: strides of the adapter pyramid, finest first; the anchor strides of
            the RPN and the ATSS head.
        roi_featmap_strides: the levels the RoI extractor pools from (a prefix of
            ``pyramid_strides``).
        roi_finest_scale: the RoI extractor's ``finest_scale``: RoIs smaller than
            2 x this side (px) pool from the first level.
    """
    # A fresh dict on every call: mmengine merges into what a config returns.
    return dict(
        aux_heads=dict(
            rcnn=dict(
                type='CoRPNRoIHead',
                rpn=dict(
                    in_channels=embed_dims,
                    feat_channels=embed_dims,
                    anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                          scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                          strides=pyramid_strides),
                    bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                                    target_means=[0.0, 0.0, 0.0, 0.0],
                                    target_stds=[1.0, 1.0, 1.0, 1.0]),
                    loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
                    loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
                roi=dict(
                    bbox_roi_extractor=dict(
                        type='SingleRoIExtractor',
                        roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
                        out_channels=embed_dims, featmap_strides=roi_featmap_strides,
                        finest_scale=roi_finest_scale),
                    bbox_head=dict(
                        in_channels=embed_dims, fc_out_channels=1024, roi_feat_size=7,
                        num_classes=num_classes,
                        bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                                        target_means=[0.0, 0.0, 0.0, 0.0],
                                        target_stds=[0.1, 0.1, 0.2, 0.2]),
                        reg_class_agnostic=False,
                        reg_decoded_bbox=True,
                        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False,
                                      loss_weight=1.0),
                        loss_bbox=dict(type='GIoULoss', loss_weight=10.0)))),
            atss=dict(
                type='CoATSSHead',
                num_classes=num_classes,
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
                loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True,
                                     loss_weight=1.0)),
        ),
        train_cfg=dict(
            rcnn=dict(
                rpn=dict(
                    assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3,
                                  min_pos_iou=0.3, match_low_quality=True, ignore_iof_thr=-1),
                    sampler=dict(type='RandomSampler', num=256, pos_fraction=0.5,
                                 neg_pos_ub=-1, add_gt_as_proposals=False),
                    allowed_border=-1,
                    pos_weight=-1),
                rpn_proposal=dict(nms_pre=4000, max_per_img=1000,
                                  nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
                rcnn=dict(
                    assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5,
                                  min_pos_iou=0.5, match_low_quality=False, ignore_iof_thr=-1),
                    sampler=dict(type='RandomSampler', num=512, pos_fraction=0.25,
                                 neg_pos_ub=-1, add_gt_as_proposals=True),
                    pos_weight=-1)),
            atss=dict(assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1,
                      pos_weight=-1)),
        test_cfg=dict(
            # 'detr' (default) evaluates the one-to-one branch; 'one-stage' the ATSS head,
            # 'two-stage' the Faster R-CNN head.
            eval_module='detr',
            rcnn=dict(
                rpn=dict(nms_pre=1000, max_per_img=1000,
                         nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
                rcnn=dict(score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5),
                          max_per_img=100)),
            atss=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.0,
                      nms=dict(type='nms', iou_threshold=0.6), max_per_img=100)),
    )
