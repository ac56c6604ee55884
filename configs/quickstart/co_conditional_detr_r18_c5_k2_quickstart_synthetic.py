# Co-Conditional-DETR-C5 with K = 2 aux heads (Faster R-CNN "rcnn" + ATSS "atss") small enough
# to train on a CPU: ResNet-18 C5 from scratch, 64 channels, one encoder and two decoder layers,
# 30 queries, the single-scale adapter's pyramid (strides 8..128) for the aux heads, on the
# synthetic shapes (`make demo` writes data/synthetic/):
#   python tools/train.py configs/quickstart/co_conditional_detr_r18_c5_k2_quickstart_synthetic.py
# The structure and loss weights are those of co_conditional_detr_c5_r50.py; the data (160 px)
# and the schedule (lr 2e-3, warm-up, cosine, 8 epochs) those of
# co_dino_r18_k2_quickstart_synthetic.py.
_base_ = [
    '../_base_/models/co_conditional_detr_c5_r50.py',
    '../_base_/datasets/synthetic_detection.py',
    '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]

embed_dims = 64
pyramid_strides = [8, 16, 32, 64, 128]
ffn = dict(embed_dims=embed_dims, feedforward_channels=256, ffn_drop=0.0)
cond_attn = dict(embed_dims=embed_dims, num_heads=4, attn_drop=0.0, proj_drop=0.0)

model = dict(
    num_classes=8,  # the synthetic shapes; every head takes it
    backbone=dict(depth=18, frozen_stages=-1, norm_eval=False,
                  norm_cfg=dict(type='BN', requires_grad=True), init_cfg=None),
    neck=dict(in_channels=[512], out_channels=embed_dims),
    query_head=dict(
        num_queries=30,  # at most 8 shapes per image
        encoder=dict(num_layers=1, layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims, num_heads=4, dropout=0.0), ffn_cfg=ffn)),
        decoder=dict(num_layers=2, layer_cfg=dict(self_attn_cfg=cond_attn,
                                                  cross_attn_cfg=cond_attn, ffn_cfg=ffn)),
        positional_encoding=dict(num_feats=embed_dims // 2)),
    adapter=dict(in_channels=embed_dims, norm_cfg=dict(type='GN', num_groups=16)),
    aux_heads=dict(
        rcnn=dict(
            rpn=dict(in_channels=embed_dims, feat_channels=embed_dims,
                     # anchors of 16..25 px at stride 8: the shapes are 8..80 px
                     anchor_generator=dict(octave_base_scale=2)),
            roi=dict(bbox_roi_extractor=dict(out_channels=embed_dims, finest_scale=28),
                     bbox_head=dict(in_channels=embed_dims, fc_out_channels=256))),
        atss=dict(in_channels=embed_dims, feat_channels=embed_dims,
                  norm_cfg=dict(type='GN', num_groups=16),
                  anchor_generator=dict(octave_base_scale=4))),  # 32 px anchors at stride 8
    train_cfg=dict(rcnn=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=300),
                             rcnn=dict(sampler=dict(num=128)))),
    test_cfg=dict(query_head=dict(max_per_img=30)),
)

# Small images at their own size (128..160 px), flipped; DETR-style multi-scale resizing
# would cost more than it brings in a few epochs.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=(160, 160), keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(160, 160), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),  # after Resize: GT stays in image pixels
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
tta_pipeline = [  # tools/test.py --tta: the test scale, plain and flipped
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(160, 160), keep_ratio=True)],
        [dict(type='RandomFlip', prob=0.0), dict(type='RandomFlip', prob=1.0)],
        [dict(type='LoadAnnotations', with_bbox=True)],
        [dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                                'scale_factor', 'flip', 'flip_direction'))],
    ]),
]
data_root = 'data/synthetic/'
train_dataloader = dict(batch_size=4, dataset=dict(data_root=data_root,
                                                   pipeline=train_pipeline))
val_dataloader = dict(batch_size=8, dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# From scratch on a small batch: 10x the official lr (2e-4) with a linear warm-up and a
# cosine decay, a looser clip (official 0.1), and the backbone at the full rate.
max_epochs = 8
warmup_iters = 100
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min_ratio=0.05, by_epoch=True,
         begin=0, end=max_epochs, convert_to_iter_based=True),
]
optim_wrapper = dict(optimizer=dict(lr=2e-3), clip_grad=dict(max_norm=1.0),
                     paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=1.0)}))
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=1, max_keep_ckpts=1))
log_processor = dict(window_size=10)
