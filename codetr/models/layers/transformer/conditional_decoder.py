"""Conditional-DETR's decoder: conditional spatial queries around 2-d reference points.

Each query has a learned positional embedding ``p``; its reference point is
``r = sigmoid(ref_point_head(p))`` (B, Q, 2), fixed for all layers. Layer ``l`` attends with the
conditional spatial query ``s_l = sine(r) * T_l`` where ``T_0 = 1`` and
``T_l = query_scale(x_l)`` for later layers (``x_l`` the layer's input content). The box of
layer ``l`` is ``sigmoid(reg(norm(x_{l+1})) + [logit(r), 0, 0])``: the reference shifts the
centre only.
"""
from __future__ import annotations

import copy

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from codetr.registry import MODELS

from .conditional_attention import ConditionalAttention
from .ffn import FFN
from .layers import init_detr_weights
from .mlp import MLP
from .utils import coordinate_to_encoding


@MODELS.register_module()
class ConditionalDetrTransformerDecoderLayer(nn.Module):
    """``self_attn -> norm -> cross_attn -> norm -> ffn -> norm`` with conditional attention.

    Shared by Conditional-DETR and DAB-DETR. Names follow MMDetection 3.x: ``self_attn``,
    ``cross_attn``, ``ffn``, ``norms.{0,1,2}``.

    Args:
        self_attn_cfg: kwargs of :class:`ConditionalAttention` (``embed_dims``, ``num_heads``,
            ``attn_drop``, ``proj_drop``).
        cross_attn_cfg: the same for the cross-attention.
        ffn_cfg: kwargs of :class:`FFN`.
        with_query_pos: the cross-attention adds ``query_pos`` (the first layer only, in both
            papers: ``keep_query_pos=False``).
    """

    def __init__(self, self_attn_cfg: dict | None = None, cross_attn_cfg: dict | None = None,
                 ffn_cfg: dict | None = None, with_query_pos: bool = True) -> None:
        super().__init__()

        def kwargs(cfg: dict | None) -> dict:
            return {k: v for k, v in (cfg or {}).items() if k not in ('type', 'cross_attn')}

        self.self_attn = ConditionalAttention(**kwargs(self_attn_cfg), cross_attn=False)
        self.cross_attn = ConditionalAttention(**kwargs(cross_attn_cfg), cross_attn=True,
                                               with_query_pos=with_query_pos)
        self.ffn = FFN(**kwargs(ffn_cfg))
        self.embed_dims = self.ffn.embed_dims
        for name in ('self_attn', 'cross_attn'):
            width = getattr(self, name).embed_dims
            if width != self.embed_dims:
                raise ValueError(f'{name}_cfg.embed_dims={width} differs from ffn_cfg.embed_dims='
                                 f'{self.embed_dims}; give every sub-config the same width')
        self.norms = nn.ModuleList(nn.LayerNorm(self.embed_dims) for _ in range(3))

    def forward(self, query: Tensor, memory: Tensor, query_pos: Tensor, memory_pos: Tensor,
                query_sine_embed: Tensor, memory_mask: Tensor | None,
                self_attn_mask: Tensor | None = None) -> Tensor:
        """One layer.

        Args:
            query: (B, Q, C) content queries.
            memory: (B, S, C) encoder output.
            query_pos: (B, Q, C) positional queries.
            memory_pos: (B, S, C) memory positions.
            query_sine_embed: (B, Q, C) conditional spatial queries.
            memory_mask: (B, S) bool, True on padded memory, or None.
            self_attn_mask: (Q, Q) bool, True where query i may NOT see query j, or None.

        Returns:
            (B, Q, C).
        """
        query = self.norms[0](self.self_attn(query, query_pos=query_pos,
                                             attn_mask=self_attn_mask))
        query = self.norms[1](self.cross_attn(
            query, key=memory, query_pos=query_pos, key_pos=memory_pos,
            query_sine_embed=query_sine_embed, key_padding_mask=memory_mask))
        return self.norms[2](self.ffn(query))


def build_conditional_layers(num_layers: int, layer_cfg: dict) -> nn.ModuleList:
    """``num_layers`` decoder layers; only the first adds ``query_pos`` in its cross-attention."""
    return nn.ModuleList(
        ConditionalDetrTransformerDecoderLayer(**copy.deepcopy(layer_cfg),
                                               with_query_pos=(i == 0))
        for i in range(num_layers))


@MODELS.register_module()
class ConditionalDetrTransformerDecoder(BaseModule):
    """Decoder of Conditional-DETR.

    Args:
        num_layers: number of layers (6).
        layer_cfg: kwargs of :class:`ConditionalDetrTransformerDecoderLayer`.
        init_cfg: mmengine initialisation config.
    """

    def __init__(self, num_layers: int, layer_cfg: dict, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.layers = build_conditional_layers(num_layers, layer_cfg)
        self.embed_dims = dims = self.layers[0].embed_dims
        self.query_scale = MLP(dims, dims, dims, 2)
        self.ref_point_head = MLP(dims, dims, 2, 2)
        self.norm = nn.LayerNorm(dims)

    def init_weights(self) -> None:
        """Xavier-uniform matrices (the official ``_reset_parameters``)."""
        init_detr_weights(self)

    def reference_points(self, query_pos: Tensor) -> Tensor:
        """(B, Q, C) positional queries -> (B, Q, 2) reference points ``xy`` in (0, 1)."""
        return self.ref_point_head(query_pos).sigmoid()

    def forward(self, query: Tensor, query_pos: Tensor, memory: Tensor, memory_pos: Tensor,
                memory_mask: Tensor | None, reference_points: Tensor | None = None,
                self_attn_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Decode.

        Args:
            query: (B, Q, C) content queries (zeros for the learned queries).
            query_pos: (B, Q, C) positional queries.
            memory: (B, S, C) encoder output.
            memory_pos: (B, S, C) memory positions.
            memory_mask: (B, S) bool, True on padding, or None.
            reference_points: (B, Q, 2) ``xy`` in [0, 1] of the valid image; None computes
                them from ``query_pos`` (:meth:`reference_points`).
            self_attn_mask: (Q, Q) bool, True where query i may NOT see query j, or None.

        Returns:
            hidden_states: (N, B, Q, C), each layer's output after the final LayerNorm.
            references: (B, Q, 2), the reference points every layer used.
        """
        if reference_points is None:
            reference_points = self.reference_points(query_pos)
        sine = coordinate_to_encoding(reference_points, num_feats=self.embed_dims // 2)
        sine = sine.to(query.dtype)  # [B, Q, C], ordered (y, x)
        hidden_states = []
        for lid, layer in enumerate(self.layers):
            spatial = sine if lid == 0 else sine * self.query_scale(query)
            query = layer(query, memory, query_pos, memory_pos, spatial, memory_mask,
                          self_attn_mask)
            hidden_states.append(self.norm(query))
        return torch.stack(hidden_states), reference_points
