# Co-DINO Swin-L, 5 scales, K = 2: co_dino_5scale_r50.py with the official Swin-L backbone
# (ImageNet-22k, 384 px, window 12; official co_dino_5scale_swin_large_1x_coco.py, whose
# SwinTransformerV1 arguments are written here under MMDetection's names). The ImageNet file is
# the original Swin release's swin_large_patch4_window12_384_22k.pth (any Swin layout loads:
# codetr/models/converters/swin.py); codetr never downloads, put it in checkpoints/.
_base_ = ['./co_dino_5scale_r50.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinTransformer',
        pretrain_img_size=384,
        embed_dims=192,
        depths=(2, 2, 18, 2),
        num_heads=(6, 12, 24, 48),
        window_size=12,
        mlp_ratio=4,
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.3,  # 1x; the 2x / 3x configs raise it
        patch_norm=True,
        out_indices=(0, 1, 2, 3),
        with_cp=False,  # True checkpoints every Swin block (saves memory, costs time)
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/swin_large_patch4_window12_384_22k.pth')),
    neck=dict(in_channels=[192, 384, 768, 1536]),
    # All 6 encoder layers recompute their activations (official with_cp=6).
    query_head=dict(transformer=dict(encoder=dict(num_cp=6))))
