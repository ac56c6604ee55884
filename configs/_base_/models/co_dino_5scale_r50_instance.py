# Co-DINO R50 for instance segmentation: co_dino_5scale_r50.py with its Faster R-CNN aux head
# turned into a Mask R-CNN aux head (CoMaskRCNNHead). The mask branch is the paper's plain
# Mask R-CNN FCN head (Table 8): RoIAlign 14 x 14 on adapter levels 4..64, 4 convs of 256,
# a 2x deconvolution and per-class 28 x 28 logits, BCE on the positive RoIs. The official
# instance models (ViT-L) use a RefineMask head with a mask-IoU head instead
# (SimpleRefineMaskHead, BAR loss, 4 stages up to 112 px); codetr does not implement those.
# Mask RoI extractor and test threshold are the official instance configs' (finest_scale 56,
# mask_thr_binary 0.5); loss weight 1.0 is the official co_deformable_detr_mask_r50_1x_coco
# FCN weight 12 divided by lambda_2 * 6 decoder layers (CoDETR applies that factor).
# At test time the DETR head's boxes get masks from this mask branch in the same pass
# (test_cfg.mask_branch='rcnn'), as the official instance configs predict masks for the
# query head's detections; eval_module='two-stage' evaluates the RoI head's boxes and masks.
_base_ = ['./co_dino_5scale_r50.py']

embed_dims = 256
model = dict(
    data_preprocessor=dict(pad_mask=True),
    aux_heads=dict(rcnn=dict(
        type='CoMaskRCNNHead',
        roi=dict(
            mask_roi_extractor=dict(
                type='SingleRoIExtractor',
                roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
                out_channels=embed_dims, featmap_strides=[4, 8, 16, 32, 64], finest_scale=56),
            mask_head=dict(num_convs=4, in_channels=embed_dims, conv_out_channels=embed_dims,
                           roi_feat_size=14, class_agnostic=False,
                           loss_mask=dict(type='CrossEntropyLoss', use_mask=True,
                                          loss_weight=1.0))))),
    train_cfg=dict(rcnn=dict(rcnn=dict(mask_size=28))),
    test_cfg=dict(mask_branch='rcnn', rcnn=dict(rcnn=dict(mask_thr_binary=0.5))),
)
