# The architecture of the parity fixture /work/shared/fixtures/co_dino_tiny_mmdet3
# (fixture.json): the MMDetection port's Co-DINO R50 5-scale config with ResNet-18,
# ChannelMapper [64, 128, 256, 512] -> 5 levels, 2 encoder (no checkpointing) + 2 decoder
# layers, 100 queries, 20 denoising queries, 80 classes, RoI FC width 256. Everything else,
# test settings included, is the official Co-DINO R50 one. tests/test_official_parity.py builds
# it, loads the converted fixture weights and compares with the port's outputs. Data,
# schedule and runtime are the R50 COCO config's.
_base_ = ['../co_dino/co_dino_5scale_r50_8xb2_1x_coco.py']

embed_dims = 256
num_decoder_layers = 2
deform_attn = dict(embed_dims=embed_dims, num_heads=8, num_levels=5, num_points=4, dropout=0.0)
ffn = dict(embed_dims=embed_dims, feedforward_channels=2048, ffn_drop=0.0)

model = dict(
    # The port folds a fixed 12 (= 6 decoder layers x lambda_2 2, official configs) into its
    # aux-head loss weights whatever the number of decoder layers; with 2 layers here,
    # lambda_2 = 12 / 2 = 6 gives codetr the same aux-loss scale as the fixture.
    lambda_2=12 / num_decoder_layers,
    data_preprocessor=dict(
        # ImageNet mean / std rounded to float16: the fixture's reference ran the port's
        # model converted to float16 and back, which rounds the data preprocessor's (buffer)
        # statistics too (measured: the fixture's preprocessed inputs fit these exactly). The
        # official values are 123.675, 116.28, 103.53 / 58.395, 57.12, 57.375.
        mean=[123.6875, 116.25, 103.5],
        std=[58.40625, 57.125, 57.375]),
    backbone=dict(depth=18, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512]),
    query_head=dict(
        num_queries=100,
        transformer=dict(
            encoder=dict(num_layers=2, num_cp=0,
                         layer_cfg=dict(self_attn_cfg=deform_attn, ffn_cfg=ffn)),
            decoder=dict(num_layers=num_decoder_layers)),
        dn_cfg=dict(group_cfg=dict(num_dn_queries=20))),
    aux_heads=dict(rcnn=dict(roi=dict(bbox_head=dict(fc_out_channels=256)))),
)
