# A tiny Swin Co-DINO for tests: the quick-start K = 2 Co-DINO (ATSS + Faster R-CNN aux heads,
# 3 levels of 64 channels, 1 encoder / 2 decoder layers) on a narrow SwinTransformer (16
# channels, 2-2-1-1 blocks, window 4) with activation checkpointing on, so a training step
# exercises the shifted windows, the padding to whole windows and the checkpointed blocks.
# tests/models/test_swin_co_dino.py trains one step with it.
_base_ = ['../quickstart/co_dino_r18_k2_quickstart_synthetic.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinTransformer',
        embed_dims=16,
        depths=(2, 2, 1, 1),
        num_heads=(1, 2, 2, 4),
        window_size=4,
        out_indices=(1, 2, 3),  # strides 8..32, as the quick-start's ResNet levels
        drop_path_rate=0.1,
        with_cp=True,
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 128]))
