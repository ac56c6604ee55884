"""DETR's encoder: standard multi-head self-attention over one flattened feature map.

The encoder of the single-scale DETRs (Conditional-DETR, DAB-DETR): post-norm layers of
``self-attention (positions added to query and key) -> norm -> FFN -> norm``. DAB-DETR adds
one change (``scale_pos=True``): before every layer an MLP of the current features rescales
the positional embedding elementwise.
"""
from __future__ import annotations

import copy

from mmengine.model import BaseModule
from torch import Tensor, nn

from codetr.registry import MODELS

from .attention import MultiheadAttention
from .ffn import FFN
from .layers import init_detr_weights
from .mlp import MLP


@MODELS.register_module()
class DetrTransformerEncoderLayer(nn.Module):
    """``self_attn -> norm -> ffn -> norm`` (post-norm, as DETR).

    Parameter names follow MMDetection 3.x: ``self_attn.attn.*``, ``ffn.layers.*``,
    ``norms.{0,1}``.

    Args:
        self_attn_cfg: kwargs of :class:`MultiheadAttention` (``embed_dims``, ``num_heads``,
            ``dropout``: on the attention weights and on the residual branch).
        ffn_cfg: kwargs of :class:`FFN` (``embed_dims``, ``feedforward_channels``,
            ``ffn_drop``, ``act_cfg``).
    """

    def __init__(self, self_attn_cfg: dict | None = None, ffn_cfg: dict | None = None) -> None:
        super().__init__()
        attn_cfg = {k: v for k, v in (self_attn_cfg or {}).items() if k != 'type'}
        ffn_kwargs = {k: v for k, v in (ffn_cfg or {}).items() if k != 'type'}
        self.self_attn = MultiheadAttention(**attn_cfg)
        self.ffn = FFN(**ffn_kwargs)
        self.embed_dims = self.ffn.embed_dims
        if self.self_attn.embed_dims != self.embed_dims:
            raise ValueError(f'self_attn_cfg.embed_dims={self.self_attn.embed_dims} differs from '
                             f'ffn_cfg.embed_dims={self.embed_dims}; give both the same width')
        self.norms = nn.ModuleList(nn.LayerNorm(self.embed_dims) for _ in range(2))

    def forward(self, query: Tensor, query_pos: Tensor,
                key_padding_mask: Tensor | None) -> Tensor:
        """(B, S, C) features, (B, S, C) positions, (B, S) bool padding -> (B, S, C)."""
        query = self.norms[0](self.self_attn(query, query_pos=query_pos,
                                             key_padding_mask=key_padding_mask))
        return self.norms[1](self.ffn(query))


@MODELS.register_module()
class DetrTransformerEncoder(BaseModule):
    """A stack of :class:`DetrTransformerEncoderLayer` (no final norm: the layers are post-norm).

    Args:
        num_layers: number of layers (6 in Conditional-DETR and DAB-DETR).
        layer_cfg: kwargs of :class:`DetrTransformerEncoderLayer`.
        scale_pos: DAB-DETR's positional scaling: layer ``l`` sees ``pos * query_scale(x_l)``,
            ``query_scale`` a 2-layer MLP (C -> C -> C) of the layer's input.
        init_cfg: mmengine initialisation config.
    """

    def __init__(self, num_layers: int, layer_cfg: dict, scale_pos: bool = False,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.layers = nn.ModuleList(DetrTransformerEncoderLayer(**copy.deepcopy(layer_cfg))
                                    for _ in range(num_layers))
        self.embed_dims = self.layers[0].embed_dims
        self.scale_pos = scale_pos
        if scale_pos:
            self.query_scale = MLP(self.embed_dims, self.embed_dims, self.embed_dims, 2)

    def init_weights(self) -> None:
        """Xavier-uniform matrices (DETR's ``_reset_parameters``)."""
        init_detr_weights(self)

    def forward(self, query: Tensor, query_pos: Tensor,
                key_padding_mask: Tensor | None) -> Tensor:
        """Encode one flattened map.

        Args:
            query: (B, S, C) features, ``S = h * w``.
            query_pos: (B, S, C) sine positions.
            key_padding_mask: (B, S) bool, True on padding, or None.

        Returns:
            memory: (B, S, C).
        """
        for layer in self.layers:
            pos = query_pos * self.query_scale(query) if self.scale_pos else query_pos
            query = layer(query, pos, key_padding_mask)
        return query
