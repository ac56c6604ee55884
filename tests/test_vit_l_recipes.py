"""The ViT-L configs carry the official recipe's numbers (REFERENCE.md, ViT-L paragraph;
official co_dino_5scale_vit_large_coco.py and co_dino_5scale_lsj_vit_large_lvis.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from mmengine.config import Config

CONFIGS = Path(__file__).resolve().parents[1] / 'configs' / 'co_dino_vit'


@pytest.fixture(scope='module')
def coco() -> Config:
    return Config.fromfile(CONFIGS / 'co_dino_5scale_vit_l_64xb1_12e_coco.py')


def test_coco_model(coco):
    model = coco.model
    assert model.backbone.type == 'ViT' and model.backbone.drop_path_rate == 0.4
    assert model.backbone.window_size == 24 and model.backbone.with_cp
    assert [i for i in range(24) if i not in model.backbone.window_block_indexes] == \
        [3, 7, 11, 15, 19, 23]
    assert model.neck.type == 'SimpleFeaturePyramid' and model.neck.use_p2
    head = model.query_head
    assert (head.num_queries, head.dn_cfg.group_cfg.num_dn_queries) == (1500, 300)
    assert (head.dn_cfg.label_noise_scale, head.dn_cfg.box_noise_scale) == (0.5, 0.4)
    assert head.transformer.encoder.num_cp == 6
    test = model.test_cfg
    assert test.query_head == dict(max_per_img=1000, nms=dict(type='soft_nms', iou_threshold=0.8))
    assert (test.rcnn.rpn.nms_pre, test.rcnn.rpn.max_per_img, test.rcnn.rpn.nms.iou_threshold) \
        == (8000, 2000, 0.9)
    assert test.rcnn.rcnn.nms == dict(type='soft_nms', iou_threshold=0.5)
    assert test.rcnn.rcnn.max_per_img == 1000
    assert (test.atss.nms.type, test.atss.nms.iou_threshold, test.atss.max_per_img) == \
        ('soft_nms', 0.6, 100)


def test_coco_schedule_optimizer_and_ema(coco):
    assert coco.train_cfg.max_epochs == 12
    warmup, step = coco.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end, warmup.by_epoch) == \
        ('LinearLR', 0.01, 500, False)
    assert step.milestones == [7] and step.gamma == 0.1
    assert coco.optim_wrapper.optimizer == dict(type='AdamW', lr=5e-5, weight_decay=0.01,
                                                fused=True)
    assert coco.optim_wrapper.constructor == 'LayerDecayOptimWrapperConstructor'
    assert coco.optim_wrapper.paramwise_cfg == dict(num_layers=24, decay_rate=0.8)
    assert coco.optim_wrapper.clip_grad.max_norm == 0.1
    assert coco.custom_hooks == [dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=1e-4,
                                      update_buffers=True, priority=49)]
    scales = coco.train_dataloader.dataset.pipeline[3].transforms[0][0].scales
    assert scales[0] == (480, 2400) and scales[-1] == (1536, 2400) and len(scales) == 34
    assert coco.test_dataloader.dataset.pipeline[1].scale == (2048, 1280)
    assert coco.model.data_preprocessor.pad_size_divisor == 32


def test_objects365_and_lvis_variants():
    o365 = Config.fromfile(CONFIGS / 'co_dino_5scale_vit_l_224xb1_26e_o365.py')
    assert o365.model.num_classes == 365
    assert o365.model.query_head.dn_cfg.group_cfg.num_dn_queries == 1000
    assert o365.param_scheduler[1].milestones == [24] and o365.train_cfg.max_epochs == 26
    assert o365.optim_wrapper.optimizer.lr == 2.5e-4 and o365.auto_scale_lr.base_batch_size == 224
    lvis = Config.fromfile(CONFIGS / 'co_dino_5scale_vit_l_lsj_64xb1_16e_lvis.py')
    backbone = lvis.model.backbone
    assert (backbone.window_size, backbone.drop_path_rate) == (16, 0.3)
    assert [i for i in range(24) if i not in backbone.window_block_indexes] == \
        [2, 5, 8, 11, 14, 17, 20, 23]
    assert lvis.model.query_head.num_queries == 900
    assert lvis.model.aux_heads.rcnn.roi.bbox_head.type == 'Shared2FCBBoxHead'
    assert lvis.param_scheduler[1].milestones == [9, 15] and lvis.train_cfg.max_epochs == 16
    assert lvis.optim_wrapper.optimizer.weight_decay == 0.05
    assert lvis.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult == 0.1
    assert not lvis.get('custom_hooks')  # no EMA for LVIS (paper appendix)
    assert lvis.model.test_cfg.query_head.max_per_img == 1000
    assert lvis.val_evaluator.type == 'LVISMetric'
