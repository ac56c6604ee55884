"""Transformer building blocks; importing a file here registers its modules."""
from .ms_deform_attn import MultiScaleDeformableAttention, ms_deform_attn
from .positional_encoding import SinePositionalEncoding
from .transformer import (
    DeformableDetrTransformerDecoder,
    DeformableDetrTransformerEncoder,
    DinoTransformerDecoder,
    coordinate_to_encoding,
    gen_encoder_output_proposals,
    get_valid_ratio,
    inverse_sigmoid,
)

__all__ = ['MultiScaleDeformableAttention', 'ms_deform_attn', 'SinePositionalEncoding',
           'DeformableDetrTransformerDecoder', 'DeformableDetrTransformerEncoder',
           'DinoTransformerDecoder', 'coordinate_to_encoding', 'gen_encoder_output_proposals',
           'get_valid_ratio', 'inverse_sigmoid']
from .dn_query import CdnQueryGenerator  # noqa: F401
from .nms import batched_nms, multiclass_nms, nms, soft_nms  # noqa: F401
