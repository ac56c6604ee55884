# Co-DAB-DETR-C5 with K = 2 aux heads on a CPU: the quick-start Co-Conditional-DETR-C5 (same
# backbone, adapter, aux heads, data and schedule) with the DAB-DETR head of
# co_dab_detr_c5_r50.py shrunk the same way (64 channels, 1 + 2 layers, 30 anchor queries).
#   python tools/train.py configs/quickstart/co_dab_detr_r18_c5_k2_quickstart_synthetic.py
_base_ = ['./co_conditional_detr_r18_c5_k2_quickstart_synthetic.py']

embed_dims = 64
ffn = dict(embed_dims=embed_dims, feedforward_channels=256, ffn_drop=0.0,
           act_cfg=dict(type='PReLU'))
cond_attn = dict(embed_dims=embed_dims, num_heads=4, attn_drop=0.0, proj_drop=0.0)

model = dict(
    query_head=dict(
        _delete_=True,
        type='CoDABDETRHead',
        num_queries=30,
        encoder=dict(type='DetrTransformerEncoder', num_layers=1, scale_pos=True, layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims, num_heads=4, dropout=0.0), ffn_cfg=ffn)),
        decoder=dict(type='DabDetrTransformerDecoder', num_layers=2, modulate_hw_attn=True,
                     layer_cfg=dict(self_attn_cfg=cond_attn, cross_attn_cfg=cond_attn,
                                    ffn_cfg=ffn)),
        positional_encoding=dict(num_feats=embed_dims // 2, temperature=20, normalize=True),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0),
        pos_query_cfg=dict(mode='dino')),
)
