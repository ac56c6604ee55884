# Co-Deformable-DETR R50, K = 2 aux heads: the Deformable-DETR++ one-to-one branch
# (deformable_detr_pp_r50.py) plus the multi-scale adapter, a Faster R-CNN aux head ("rcnn") and
# an ATSS aux head ("atss"), in the official order. Numbers from the official
# co_deformable_detr_r50_1x_coco.py (REFERENCE.md). The neck gives 4 levels (strides 8..64); the
# adapter adds stride 128. The aux heads are Co-DINO's (co_aux_heads.py, loss weights the
# official ones / 12: CoDETR multiplies them by lambda_2 x 6 decoder layers) on this pyramid.
_base_ = ['./deformable_detr_pp_r50.py']
# Imports go after `_base_`: mmengine reads a config that imports a non-stdlib module first
# as a lazy-import config. run_path loads the helper file afresh, without touching sys.path.
from runpy import run_path  # noqa: E402

official_aux_heads = run_path('{{ fileDirname }}/co_aux_heads.py')['official_aux_heads']

num_classes = 80
embed_dims = 256
# Strides of the adapter pyramid: the 4 neck levels (8..64) plus the adapter's extra level.
pyramid_strides = [8, 16, 32, 64, 128]

model = dict(
    lambda_1=1.0,  # positive-query branches (paper eq. 6)
    lambda_2=2.0,  # aux-head losses (paper eq. 6)
    adapter=dict(_delete_=True, type='MultiScaleAdapter', in_channels=embed_dims, num_extra=1),
    # aux_heads (rcnn, atss), train_cfg and test_cfg (eval_module 'detr').
    **official_aux_heads(
        num_classes=num_classes, embed_dims=embed_dims, pyramid_strides=pyramid_strides,
        # RoIs pool from the 4 encoder levels only (official featmap_strides).
        roi_featmap_strides=pyramid_strides[:4], roi_finest_scale=112),
)
