"""DAB-DETR's decoder: 4-d anchor boxes as queries, refined layer by layer.

Layer ``l`` with anchors ``a_l = (x, y, w, h)`` (B, Q, 4) in (0, 1) and content ``x_l``:

- ``e = sine(a_l)`` (4 x C/2 features, ordered y, x, w, h), ``query_pos = ref_point_head(e)``;
- the conditional spatial query is the (y, x) half of ``e`` times ``T_l`` (``T_0 = 1``,
  ``T_l = query_scale(x_l)``), with the width-height modulation: the x features are scaled by
  ``w_ref / w`` and the y features by ``h_ref / h``, ``(w_ref, h_ref) =
  sigmoid(ref_anchor_head(x_l))``, so attention spreads according to the box size;
- ``x_{l+1} = layer(x_l, ...)``; ``new_l = sigmoid(reg(x_{l+1}) + logit(a_l))`` (the head's
  shared box branch, on the un-normalised output) and ``a_{l+1} = new_l`` detached.

Returned: ``hidden_states[l] = norm(x_{l+1})`` and ``references = [a_0, new_0, ..., new_{N-2}]``
(``new_l`` not detached, as DAB-DETR), the anchor each layer's box is predicted from.
"""
from __future__ import annotations

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from codetr.registry import MODELS

from .conditional_decoder import build_conditional_layers
from .layers import init_detr_weights
from .mlp import MLP
from .utils import coordinate_to_encoding, inverse_sigmoid


@MODELS.register_module()
class DabDetrTransformerDecoder(BaseModule):
    """Decoder of DAB-DETR (``query_scale_type='cond_elewise'``, ``keep_query_pos=False``).

    Args:
        num_layers: number of layers (6).
        layer_cfg: kwargs of :class:`ConditionalDetrTransformerDecoderLayer`.
        modulate_hw_attn: the width-height modulated attention (DAB-DETR: True).
        init_cfg: mmengine initialisation config.
    """

    def __init__(self, num_layers: int, layer_cfg: dict, modulate_hw_attn: bool = True,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.layers = build_conditional_layers(num_layers, layer_cfg)
        self.embed_dims = dims = self.layers[0].embed_dims
        self.modulate_hw_attn = modulate_hw_attn
        self.query_scale = MLP(dims, dims, dims, 2)
        self.ref_point_head = MLP(2 * dims, dims, dims, 2)
        if modulate_hw_attn:
            self.ref_anchor_head = MLP(dims, dims, 2, 2)
        self.norm = nn.LayerNorm(dims)

    def init_weights(self) -> None:
        """Xavier-uniform matrices (the official ``_reset_parameters``)."""
        init_detr_weights(self)

    def _spatial_query(self, embed: Tensor, query: Tensor, anchors: Tensor,
                       first: bool) -> Tensor:
        """(B, Q, 2C) anchor sine embedding -> (B, Q, C) conditional spatial query."""
        half = self.embed_dims // 2
        spatial = embed[..., :self.embed_dims]  # (y, x) features
        if not first:
            spatial = spatial * self.query_scale(query)
        if self.modulate_hw_attn:
            ref_wh = self.ref_anchor_head(query).sigmoid()  # [B, Q, 2]
            scale_y = (ref_wh[..., 1] / anchors[..., 3])[..., None]
            scale_x = (ref_wh[..., 0] / anchors[..., 2])[..., None]
            spatial = torch.cat([spatial[..., :half] * scale_y, spatial[..., half:] * scale_x],
                                dim=-1)
        return spatial

    def forward(self, query: Tensor, memory: Tensor, memory_pos: Tensor,
                memory_mask: Tensor | None, anchors: Tensor, reg_branch: nn.Module,
                self_attn_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Decode.

        Args:
            query: (B, Q, C) content queries (zeros for the learned anchors).
            memory: (B, S, C) encoder output.
            memory_pos: (B, S, C) memory positions.
            memory_mask: (B, S) bool, True on padding, or None.
            anchors: (B, Q, 4) ``cxcywh`` in (0, 1] of the valid image; widths and heights must
                be positive (they divide the modulation).
            reg_branch: the head's box branch, (B, Q, C) -> (B, Q, 4) logit offsets.
            self_attn_mask: (Q, Q) bool, True where query i may NOT see query j, or None.

        Returns:
            hidden_states: (N, B, Q, C) after the final LayerNorm.
            references: (N, B, Q, 4), ``references[l]`` the anchor of layer ``l``'s box.
        """
        if anchors.size(-1) != 4:
            raise ValueError('DabDetrTransformerDecoder needs (B, Q, 4) cxcywh anchors, got '
                             f'{tuple(anchors.shape)}')
        hidden_states, references = [], [anchors]
        for lid, layer in enumerate(self.layers):
            embed = coordinate_to_encoding(anchors, num_feats=self.embed_dims // 2)
            embed = embed.to(query.dtype)  # [B, Q, 2C]
            query_pos = self.ref_point_head(embed)
            spatial = self._spatial_query(embed, query, anchors, first=lid == 0)
            query = layer(query, memory, query_pos, memory_pos, spatial, memory_mask,
                          self_attn_mask)
            hidden_states.append(self.norm(query))
            if lid < len(self.layers) - 1:  # the last layer's refinement would go unused
                new_anchors = (reg_branch(query) + inverse_sigmoid(anchors)).sigmoid()
                references.append(new_anchors)
                anchors = new_anchors.detach()
        return torch.stack(hidden_states), torch.stack(references)
