"""Query heads of the one-to-one (DETR) branch; importing this package registers them."""
from .co_conditional_detr_head import CoConditionalDETRHead
from .co_dab_detr_head import CoDABDETRHead
from .co_deform_detr_head import CoDeformDETRHead
from .co_dino_head import CoDINOHead, level_padding_masks
from .co_dino_transformer import (
    CO_DINO_R50_TRANSFORMER,
    CoDinoTransformer,
    EncoderOutput,
    SelectedQueries,
)
from .detr_criterion import DetrCriterion, DetrTargets, image_size_factors, mean_over_ranks
from .postprocess import detr_postprocess

__all__ = ['CO_DINO_R50_TRANSFORMER', 'CoConditionalDETRHead', 'CoDABDETRHead', 'CoDINOHead',
           'CoDeformDETRHead', 'CoDinoTransformer',
           'DetrCriterion', 'DetrTargets', 'EncoderOutput', 'SelectedQueries',
           'detr_postprocess', 'image_size_factors', 'level_padding_masks', 'mean_over_ranks']
