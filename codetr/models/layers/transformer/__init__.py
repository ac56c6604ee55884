"""Transformer blocks of the DETR one-to-one branch: encoder, decoders, layers, helpers."""
from .attention import MultiheadAttention
from .conditional_attention import ConditionalAttention
from .conditional_decoder import (
    ConditionalDetrTransformerDecoder,
    ConditionalDetrTransformerDecoderLayer,
)
from .dab_decoder import DabDetrTransformerDecoder
from .deformable_decoder import DeformableDetrTransformerDecoder
from .detr_encoder import DetrTransformerEncoder, DetrTransformerEncoderLayer
from .dino_decoder import DinoTransformerDecoder
from .encoder import DeformableDetrTransformerEncoder
from .ffn import FFN
from .layers import (
    DeformableDetrTransformerDecoderLayer,
    DeformableDetrTransformerEncoderLayer,
    init_detr_weights,
)
from .mlp import MLP
from .utils import (
    coordinate_to_encoding,
    gen_encoder_output_proposals,
    get_reference_points,
    get_valid_ratio,
    inverse_sigmoid,
    lift_points_to_boxes,
    refine_reference_points,
    scale_by_valid_ratios,
    stack_decoder_outputs,
)

__all__ = [
    'FFN', 'MLP', 'ConditionalAttention', 'ConditionalDetrTransformerDecoder',
    'ConditionalDetrTransformerDecoderLayer', 'DabDetrTransformerDecoder',
    'DeformableDetrTransformerDecoder', 'DeformableDetrTransformerDecoderLayer',
    'DeformableDetrTransformerEncoder', 'DeformableDetrTransformerEncoderLayer',
    'DetrTransformerEncoder', 'DetrTransformerEncoderLayer', 'DinoTransformerDecoder',
    'MultiheadAttention', 'coordinate_to_encoding', 'gen_encoder_output_proposals',
    'get_reference_points', 'get_valid_ratio', 'init_detr_weights', 'inverse_sigmoid',
    'lift_points_to_boxes', 'refine_reference_points', 'scale_by_valid_ratios',
    'stack_decoder_outputs'
]
