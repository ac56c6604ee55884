"""DINO's decoder: query positions from reference boxes, box refinement, look forward twice."""
from __future__ import annotations

import copy

from mmengine.model import BaseModule
from torch import Tensor, nn

from codetr.registry import MODELS

from .layers import DeformableDetrTransformerDecoderLayer, init_detr_weights
from .utils import (
    coordinate_to_encoding,
    refine_reference_points,
    scale_by_valid_ratios,
    stack_decoder_outputs,
)

# inverse_sigmoid clamp in DINO's box refinement (DINO / Co-DINO decoder code).
DINO_INVERSE_SIGMOID_EPS = 1e-3


@MODELS.register_module()
class DinoTransformerDecoder(BaseModule):
    """Decoder of DINO and Co-DINO.

    Per layer ``l`` with reference boxes ``r_l`` (B, Q, 4) (``r_0`` the input):

    - ``query_pos = ref_point_head(sine(r_l * valid_ratios))`` (sine of the level-0 view,
      ``2 * C`` features for boxes, then ``Linear(2C, C) - ReLU - Linear(C, C)``);
    - ``out_l = layer(out_{l-1}, query_pos, cross-attention sampled around r_l)``;
    - ``new_l = sigmoid(reg_branches[l](out_l) + inverse_sigmoid(r_l, 1e-3))`` and
      ``r_{l+1} = new_l.detach()``: the next layer never back-propagates into this one's box.

    Returned: ``hidden_states[l] = norm(out_l)`` and ``references = [r_0, ref_1, ..., ref_N]``
    where, with ``look_forward_twice``, ``ref_{l+1} = new_l`` (NOT detached) and otherwise
    ``ref_{l+1} = r_{l+1}`` (detached). A head predicting layer ``l`` as
    ``sigmoid(reg_branches[l](hidden_states[l]) + inverse_sigmoid(references[l]))`` therefore
    sends layer ``l``'s box loss into ``reg_branches[l - 1]`` and layer ``l - 1`` as well ("look
    forward twice", DINO section 3.5). ``r_0`` is passed through as given; DINO's two-stage
    selection detaches it before calling.

    Args:
        num_layers: number of layers (6).
        layer_cfg: kwargs of :class:`DeformableDetrTransformerDecoderLayer`.
        return_intermediate: return every layer (needed for the per-layer losses).
        look_forward_twice: return the undetached refined boxes (see above).
        init_cfg: mmengine initialisation config.
    """

    def __init__(self, num_layers: int, layer_cfg: dict, return_intermediate: bool = True,
                 look_forward_twice: bool = True, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.return_intermediate = return_intermediate
        self.look_forward_twice = look_forward_twice
        self.layers = nn.ModuleList([
            DeformableDetrTransformerDecoderLayer(**copy.deepcopy(layer_cfg))
            for _ in range(num_layers)])
        self.embed_dims = dims = self.layers[0].embed_dims
        # Named .0 / .2 as the official checkpoints (Linear, ReLU, Linear).
        self.ref_point_head = nn.Sequential(nn.Linear(2 * dims, dims), nn.ReLU(inplace=True),
                                            nn.Linear(dims, dims))
        self.norm = nn.LayerNorm(dims)

    def init_weights(self) -> None:
        """Xavier weights, then the deformable attention's own initialisation."""
        init_detr_weights(self)

    def forward(self, query: Tensor, value: Tensor, key_padding_mask: Tensor | None,
                self_attn_mask: Tensor | None, reference_points: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor, valid_ratios: Tensor,
                reg_branches: nn.ModuleList | None,
                value_cache: dict | None = None) -> tuple[Tensor, Tensor]:
        """Decode ``query`` against the encoder memory.

        Args:
            query: (B, Q, C) content queries (denoising queries first, if any).
            value: (B, S, C) encoder memory.
            key_padding_mask: (B, S) bool, True on padded memory, or None.
            self_attn_mask: (Q, Q) bool, True where query i may NOT see query j (keeps
                denoising groups and matching queries apart), or None.
            reference_points: (B, Q, 4) ``cxcywh`` in [0, 1] of the valid image.
            spatial_shapes: (L, 2) long ``(h, w)``.
            level_start_index: (L,) long.
            valid_ratios: (B, L, 2) ``(w, h)`` valid ratios.
            reg_branches: one box regression module per layer, (B, Q, C) -> (B, Q, 4), shared
                with the head; None disables refinement (references stay ``r_0``).
            value_cache: a dict shared by every pass over this ``value`` (the main and the
                positive-query passes of a step) so each layer projects it once; or None.

        Returns:
            hidden_states: (N, B, Q, C) after the final LayerNorm, N = num_layers
                ((1, B, Q, C) without ``return_intermediate``).
            references: (N + 1, B, Q, 4) as described in the class docstring
                ((2, B, Q, 4): the last layer's input and output, without intermediates).
        """
        if reference_points.size(-1) != 4:
            raise ValueError('DinoTransformerDecoder needs (B, Q, 4) cxcywh reference boxes, '
                             f'got {tuple(reference_points.shape)}')
        hidden_states, references = [], [reference_points]
        for lid, layer in enumerate(self.layers):
            reference_input = scale_by_valid_ratios(reference_points, valid_ratios)
            sine = coordinate_to_encoding(reference_input[:, :, 0], num_feats=self.embed_dims // 2)
            query_pos = self.ref_point_head(sine)
            query = layer(query, value, query_pos, key_padding_mask, self_attn_mask,
                          reference_input, spatial_shapes, level_start_index, value_cache)
            refined = reference_points
            if reg_branches is not None:
                refined = refine_reference_points(reg_branches[lid](query), reference_points,
                                                  eps=DINO_INVERSE_SIGMOID_EPS)
                reference_points = refined.detach()
            hidden_states.append(self.norm(query))
            references.append(refined if self.look_forward_twice else reference_points)
        return stack_decoder_outputs(hidden_states, references, self.return_intermediate)
