# Co-DAB-DETR-C5 R50, K = 2 aux heads: DAB-DETR (Liu et al., ICLR 2022) as the one-to-one
# branch, with the backbone, C5 neck, single-scale adapter and aux heads of
# co_conditional_detr_c5_r50.py (only the query head differs).
# Paper Table 2 (36 epochs, COCO val box AP): K = 0 41.2, K = 1 43.1, K = 2 43.5.
# The head has the official DAB-DETR R50 settings (300 anchor queries, 6 + 6 layers, 8 heads,
# FFN 2048 with PReLU, no dropout, DAB's positional scaling in the encoder, width-height
# modulated cross-attention, sine positions with temperature 20, focal loss 1, L1 5, GIoU 2,
# Hungarian costs 2 / 5 / 2, top 300 at test).
_base_ = ['./co_conditional_detr_c5_r50.py']

embed_dims = 256
num_heads = 8
ffn = dict(embed_dims=embed_dims, feedforward_channels=2048, ffn_drop=0.0,
           act_cfg=dict(type='PReLU'))
cond_attn = dict(embed_dims=embed_dims, num_heads=num_heads, attn_drop=0.0, proj_drop=0.0)

model = dict(
    query_head=dict(
        _delete_=True,
        type='CoDABDETRHead',
        num_queries=300,
        encoder=dict(
            type='DetrTransformerEncoder',
            num_layers=6,
            scale_pos=True,  # DAB-DETR: an MLP of the features rescales the positions
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=embed_dims, num_heads=num_heads, dropout=0.0),
                ffn_cfg=ffn)),
        decoder=dict(
            type='DabDetrTransformerDecoder',
            num_layers=6,
            modulate_hw_attn=True,
            layer_cfg=dict(self_attn_cfg=cond_attn, cross_attn_cfg=cond_attn, ffn_cfg=ffn)),
        positional_encoding=dict(num_feats=embed_dims // 2, temperature=20, normalize=True),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0),
        # positive queries: the boxes are the anchors; the content query is their embedding
        pos_query_cfg=dict(mode='dino')),
    test_cfg=dict(query_head=dict(max_per_img=300)),  # top 300 over (query x class)
)
