"""Post-norm transformer layers of the deformable encoder and the DETR decoders.

Both layers build their multi-scale deformable attention from the registry (default type
``MultiScaleDeformableAttention``), so a config may swap in another attention with the same
call signature. Submodule names (``attentions``, ``ffns``, ``norms``) follow MMDetection so
official checkpoints load by name.
"""
from __future__ import annotations

import copy

from torch import Tensor, nn

from codetr.registry import MODELS

from .attention import MultiheadAttention
from .ffn import FFN


def _build(cfg: dict | None, default_type: str) -> nn.Module:
    """Build ``cfg`` from MODELS, with ``type`` defaulting to ``default_type``."""
    cfg = copy.deepcopy(cfg) if cfg is not None else {}
    cfg.setdefault('type', default_type)
    return MODELS.build(cfg)


def _build_ffn(cfg: dict | None) -> FFN:
    cfg = copy.deepcopy(cfg) if cfg is not None else {}
    cfg.pop('type', None)
    return FFN(**cfg)


def _check_width(name: str, module: nn.Module, embed_dims: int) -> None:
    width = getattr(module, 'embed_dims', embed_dims)
    if width != embed_dims:
        raise ValueError(f'{name} has embed_dims={width} but the layer uses {embed_dims}; '
                         'give every sub-config of layer_cfg the same embed_dims')


@MODELS.register_module()
class DeformableDetrTransformerEncoderLayer(nn.Module):
    """``self_attn (deformable) -> norm -> ffn -> norm``.

    Args:
        self_attn_cfg: kwargs of the multi-scale deformable attention (``embed_dims``,
            ``num_heads``, ``num_levels``, ``num_points``, ``dropout``...).
        ffn_cfg: kwargs of :class:`FFN` (``embed_dims``, ``feedforward_channels``, ``ffn_drop``).
    """

    def __init__(self, self_attn_cfg: dict | None = None, ffn_cfg: dict | None = None) -> None:
        super().__init__()
        self.attentions = nn.ModuleList([_build(self_attn_cfg, 'MultiScaleDeformableAttention')])
        self.ffns = nn.ModuleList([_build_ffn(ffn_cfg)])
        self.embed_dims = self.ffns[0].embed_dims
        _check_width('self_attn_cfg', self.attentions[0], self.embed_dims)
        self.norms = nn.ModuleList([nn.LayerNorm(self.embed_dims) for _ in range(2)])

    def forward(self, query: Tensor, query_pos: Tensor, key_padding_mask: Tensor | None,
                reference_points: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor) -> Tensor:
        """One encoder layer over the flattened pyramid.

        Args:
            query: (B, S, C) flattened multi-level features.
            query_pos: (B, S, C) positional + level embeddings.
            key_padding_mask: (B, S) bool, True on padding, or None.
            reference_points: (B, S, L, 2) normalised ``xy`` per level.
            spatial_shapes: (L, 2) long ``(h, w)``.
            level_start_index: (L,) long offset of each level in S.

        Returns:
            (B, S, C).
        """
        query = self.attentions[0](
            query=query, value=query, query_pos=query_pos, key_padding_mask=key_padding_mask,
            reference_points=reference_points, spatial_shapes=spatial_shapes,
            level_start_index=level_start_index)
        query = self.norms[0](query)
        return self.norms[1](self.ffns[0](query))


@MODELS.register_module()
class DeformableDetrTransformerDecoderLayer(nn.Module):
    """``self_attn -> norm -> cross_attn (deformable) -> norm -> ffn -> norm``.

    Args:
        self_attn_cfg: kwargs of :class:`MultiheadAttention` (``embed_dims``, ``num_heads``,
            ``dropout``).
        cross_attn_cfg: kwargs of the multi-scale deformable attention.
        ffn_cfg: kwargs of :class:`FFN`.
    """

    def __init__(self, self_attn_cfg: dict | None = None, cross_attn_cfg: dict | None = None,
                 ffn_cfg: dict | None = None) -> None:
        super().__init__()
        self_attn_cfg = copy.deepcopy(self_attn_cfg) if self_attn_cfg is not None else {}
        self_attn_cfg.pop('type', None)
        self.attentions = nn.ModuleList([
            MultiheadAttention(**self_attn_cfg),
            _build(cross_attn_cfg, 'MultiScaleDeformableAttention')])
        self.ffns = nn.ModuleList([_build_ffn(ffn_cfg)])
        self.embed_dims = self.ffns[0].embed_dims
        _check_width('self_attn_cfg', self.attentions[0], self.embed_dims)
        _check_width('cross_attn_cfg', self.attentions[1], self.embed_dims)
        self.norms = nn.ModuleList([nn.LayerNorm(self.embed_dims) for _ in range(3)])

    def forward(self, query: Tensor, value: Tensor, query_pos: Tensor | None,
                key_padding_mask: Tensor | None, self_attn_mask: Tensor | None,
                reference_points: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, value_cache: dict | None = None) -> Tensor:
        """One decoder layer.

        Args:
            query: (B, Q, C) content queries.
            value: (B, S, C) encoder memory.
            query_pos: (B, Q, C) positional queries, added before both attentions.
            key_padding_mask: (B, S) bool, True on padded memory, or None.
            self_attn_mask: (Q, Q) bool, True where query i may NOT see query j, or None.
            reference_points: (B, Q, L, 2) ``xy`` or (B, Q, L, 4) ``cxcywh``, normalised to
                each level's padded map.
            spatial_shapes: (L, 2) long ``(h, w)``.
            level_start_index: (L,) long.
            value_cache: shared by decoder passes over the same memory (see
                ``MultiScaleDeformableAttention``), or None.

        Returns:
            (B, Q, C).
        """
        query = self.attentions[0](query, query_pos=query_pos, attn_mask=self_attn_mask)
        query = self.norms[0](query)
        query = self.attentions[1](
            query=query, value=value, query_pos=query_pos, key_padding_mask=key_padding_mask,
            reference_points=reference_points, spatial_shapes=spatial_shapes,
            level_start_index=level_start_index, value_cache=value_cache)
        query = self.norms[1](query)
        return self.norms[2](self.ffns[0](query))


def init_detr_weights(module: nn.Module) -> None:
    """Xavier-uniform every matrix of ``module``, then let submodules re-initialise themselves.

    DETR-family transformers start from Xavier weights; the deformable attention then restores
    its own scheme (zero offsets arranged on a ring, uniform attention weights), which is why
    any submodule with an ``init_weights`` method is called afterwards.
    """
    for param in module.parameters():
        if param.dim() > 1:
            nn.init.xavier_uniform_(param)
    for sub in module.modules():
        if sub is not module and callable(getattr(sub, 'init_weights', None)):
            sub.init_weights()
