# Instance segmentation quick start: the K = 2 quick-start Co-DINO with its Faster R-CNN aux
# head turned into a Mask R-CNN head (CoMaskRCNNHead: + RoIAlign 14 x 14, 4 convs, deconv,
# per-class 28 x 28 masks), trained on the synthetic shapes' polygon masks and evaluated
# for box and mask AP. The DETR head's boxes get their masks from the rcnn head's mask
# branch in the same pass (test_cfg.mask_branch):
#   make demo DEMO_CONFIG=configs/quickstart/co_dino_r18_k2_mask_quickstart_synthetic.py
_base_ = ['./co_dino_r18_k2_quickstart_synthetic.py']

embed_dims = 64
model = dict(
    data_preprocessor=dict(pad_mask=True),
    aux_heads=dict(rcnn=dict(
        type='CoMaskRCNNHead',
        roi=dict(
            mask_roi_extractor=dict(
                type='SingleRoIExtractor',
                roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
                out_channels=embed_dims, featmap_strides=[8, 16, 32], finest_scale=28),
            mask_head=dict(in_channels=embed_dims, conv_out_channels=embed_dims, num_convs=4,
                           roi_feat_size=14,
                           loss_mask=dict(type='CrossEntropyLoss', use_mask=True,
                                          loss_weight=1.0))))),
    train_cfg=dict(rcnn=dict(rcnn=dict(mask_size=28))),
    test_cfg=dict(mask_branch='rcnn', rcnn=dict(rcnn=dict(mask_thr_binary=0.5))),
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=(160, 160), keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(160, 160), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),  # GT in image pixels
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(metric=['bbox', 'segm'])
test_evaluator = val_evaluator
