"""Deformable-DETR's decoder (Co-Deformable-DETR's one-to-one branch)."""
from __future__ import annotations

import copy

from mmengine.model import BaseModule
from torch import Tensor, nn

from codetr.registry import MODELS

from .layers import DeformableDetrTransformerDecoderLayer, init_detr_weights
from .utils import (
    lift_points_to_boxes,
    refine_reference_points,
    scale_by_valid_ratios,
    stack_decoder_outputs,
)


@MODELS.register_module()
class DeformableDetrTransformerDecoder(BaseModule):
    """Decoder of Deformable-DETR, with optional iterative box refinement.

    Per layer ``l`` with references ``r_l`` (``r_0`` the input: (B, Q, 2) points for the
    single-stage model, (B, Q, 4) boxes for two-stage):

    - ``out_l = layer(out_{l-1}, query_pos, cross-attention around r_l * valid_ratios)``;
    - with ``reg_branches``: ``new_l = refine(reg_branches[l](out_l), r_l)`` (see
      :func:`refine_reference_points`) and ``r_{l+1} = new_l.detach()``; without, ``r_{l+1} =
      r_l``.

    Returned: ``hidden_states[l] = out_l`` (no final norm: the layers are post-norm) and
    ``references = [r_0, ref_1, ..., ref_N]`` with ``ref_{l+1} = new_l`` undetached when
    ``look_forward_twice`` else ``r_{l+1}``. When 2-d points are refined into boxes,
    ``references[0]`` is ``r_0`` lifted to ``(x, y, 0.5, 0.5)``, which makes the stack
    possible and gives a head the same predictions as adding the logits to ``xy`` only.

    Args:
        num_layers: number of layers (6).
        layer_cfg: kwargs of :class:`DeformableDetrTransformerDecoderLayer`.
        return_intermediate: return every layer (needed for the per-layer losses).
        look_forward_twice: return the undetached refined boxes (off in Deformable-DETR).
        init_cfg: mmengine initialisation config.
    """

    def __init__(self, num_layers: int, layer_cfg: dict, return_intermediate: bool = True,
                 look_forward_twice: bool = False, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.return_intermediate = return_intermediate
        self.look_forward_twice = look_forward_twice
        self.layers = nn.ModuleList([
            DeformableDetrTransformerDecoderLayer(**copy.deepcopy(layer_cfg))
            for _ in range(num_layers)])
        self.embed_dims = self.layers[0].embed_dims

    def init_weights(self) -> None:
        """Xavier weights, then the deformable attention's own initialisation."""
        init_detr_weights(self)

    def forward(self, query: Tensor, query_pos: Tensor | None, value: Tensor,
                key_padding_mask: Tensor | None, reference_points: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor, valid_ratios: Tensor,
                reg_branches: nn.ModuleList | None = None,
                self_attn_mask: Tensor | None = None,
                value_cache: dict | None = None) -> tuple[Tensor, Tensor]:
        """Decode ``query`` against the encoder memory.

        Args:
            query: (B, Q, C) content queries.
            query_pos: (B, Q, C) positional queries, or None.
            value: (B, S, C) encoder memory.
            key_padding_mask: (B, S) bool, True on padded memory, or None.
            reference_points: (B, Q, 2) ``xy`` or (B, Q, 4) ``cxcywh`` in [0, 1] of the valid
                image.
            spatial_shapes: (L, 2) long ``(h, w)``.
            level_start_index: (L,) long.
            valid_ratios: (B, L, 2) ``(w, h)`` valid ratios.
            reg_branches: one (B, Q, C) -> (B, Q, 4) module per layer, or None.
            self_attn_mask: (Q, Q) bool, True where query i may NOT see query j, or None.
            value_cache: a dict shared by every pass over this ``value`` so each layer
                projects it once; or None.

        Returns:
            hidden_states: (N, B, Q, C), or (1, B, Q, C) without ``return_intermediate``.
            references: (N + 1, B, Q, D), D = 4 with refinement or box input, else 2; or
                (2, B, Q, D) without ``return_intermediate``.
        """
        first = reference_points
        if reg_branches is not None and first.size(-1) == 2:
            first = lift_points_to_boxes(first)
        hidden_states, references = [], [first]
        for lid, layer in enumerate(self.layers):
            reference_input = scale_by_valid_ratios(reference_points, valid_ratios)
            query = layer(query, value, query_pos, key_padding_mask, self_attn_mask,
                          reference_input, spatial_shapes, level_start_index, value_cache)
            refined = reference_points
            if reg_branches is not None:
                refined = refine_reference_points(reg_branches[lid](query), reference_points)
                reference_points = refined.detach()
            hidden_states.append(query)
            references.append(refined if self.look_forward_twice else reference_points)
        return stack_decoder_outputs(hidden_states, references, self.return_intermediate)
