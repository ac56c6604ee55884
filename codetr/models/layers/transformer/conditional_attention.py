"""Conditional attention: the decoder attention of Conditional-DETR and DAB-DETR.

Content and positional parts of queries and keys have their own projections, and the attention
itself has no input projection. Self-attention adds them: ``q = Wqc x + Wqp p``,
``k = Wkc x + Wkp p``, ``v = Wv x``. Cross-attention concatenates them per head instead of
adding, so the content and the spatial terms of the dot product are separate
(Conditional-DETR, section 3.3): ``q_h = [Wqc x (+ Wqp p, first layer only) ; Wqs s]_h`` with
``s`` the conditional spatial query, ``k_h = [Wkc m (+ Wkp pos, first layer) ; Wkp pos]_h``,
``v = Wv m``; the scale is ``1 / sqrt(2 C / H)``. Both end in an output projection.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codetr.registry import MODELS


def _heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, N, C) -> (B, H, N, C / H)."""
    batch, length, dims = x.shape
    return x.view(batch, length, num_heads, dims // num_heads).transpose(1, 2)


def attention_mask(attn_mask: Tensor | None, key_padding_mask: Tensor | None) -> Tensor | None:
    """Boolean mask for ``scaled_dot_product_attention`` (True = may attend), broadcastable to
    (B, H, Q, S), from ``attn_mask`` (Q, S) and ``key_padding_mask`` (B, S), both True where
    attention is NOT allowed; None when neither is given."""
    allowed = None
    if key_padding_mask is not None:
        allowed = ~key_padding_mask.bool()[:, None, None, :]
    if attn_mask is not None:
        pair = ~attn_mask.bool()[None, None]
        allowed = pair if allowed is None else allowed & pair
    return allowed


@MODELS.register_module()
class ConditionalAttention(nn.Module):
    """Self- or cross-attention with separate content / positional projections.

    Parameter names follow MMDetection 3.x's ``ConditionalAttention``: ``qcontent_proj``,
    ``qpos_proj`` (absent in a cross-attention built ``with_query_pos=False``),
    ``kcontent_proj``, ``kpos_proj``, ``v_proj``, ``qpos_sine_proj`` (cross-attention only),
    ``out_proj``.

    Args:
        embed_dims: channels C.
        num_heads: heads H; must divide C.
        cross_attn: cross-attention (concatenated content / spatial parts) instead of
            self-attention (summed).
        with_query_pos: cross-attention only: add the projected ``query_pos`` to the query and
            ``key_pos`` to the key content (Conditional-DETR does so in its first decoder
            layer only, which alone holds ``qpos_proj``).
        attn_drop: dropout on the attention weights.
        proj_drop: dropout on the output, before the residual.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, cross_attn: bool = False,
                 with_query_pos: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by num_heads '
                             f'({num_heads})')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.cross_attn = cross_attn
        self.with_query_pos = with_query_pos or not cross_attn
        self.attn_drop = attn_drop
        linear = lambda: nn.Linear(embed_dims, embed_dims)  # noqa: E731
        self.qcontent_proj = linear()
        if self.with_query_pos:
            self.qpos_proj = linear()
        self.kcontent_proj = linear()
        self.kpos_proj = linear()
        self.v_proj = linear()
        if cross_attn:
            self.qpos_sine_proj = linear()
        self.out_proj = linear()
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, query: Tensor, key: Tensor | None = None, query_pos: Tensor | None = None,
                key_pos: Tensor | None = None, query_sine_embed: Tensor | None = None,
                attn_mask: Tensor | None = None,
                key_padding_mask: Tensor | None = None) -> Tensor:
        """Attend and add the residual ``query``.

        Args:
            query: (B, Q, C) content queries.
            key: (B, S, C) encoder memory (cross-attention); ignored for self-attention.
            query_pos: (B, Q, C) positional queries.
            key_pos: (B, S, C) memory positions (cross-attention).
            query_sine_embed: (B, Q, C) conditional spatial query (cross-attention).
            attn_mask: (Q, S) bool, True where query i may NOT attend to key j, or None.
            key_padding_mask: (B, S) bool, True on padded keys, or None.

        Returns:
            (B, Q, C) ``query + dropout(out_proj(attention))``.
        """
        if self.cross_attn:
            q, k, v = self._cross_inputs(query, key, query_pos, key_pos, query_sine_embed)
        else:
            if query_pos is None:
                raise ValueError('conditional self-attention needs query_pos')
            q = _heads(self.qcontent_proj(query) + self.qpos_proj(query_pos), self.num_heads)
            k = _heads(self.kcontent_proj(query) + self.kpos_proj(query_pos), self.num_heads)
            v = _heads(self.v_proj(query), self.num_heads)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attention_mask(attn_mask, key_padding_mask),
            dropout_p=self.attn_drop if self.training else 0.0)  # [B, H, Q, C / H]
        out = out.transpose(1, 2).flatten(2)  # [B, Q, C]
        return query + self.proj_drop(self.out_proj(out))

    def _cross_inputs(self, query: Tensor, key: Tensor | None, query_pos: Tensor | None,
                      key_pos: Tensor | None, query_sine_embed: Tensor | None
                      ) -> tuple[Tensor, Tensor, Tensor]:
        """(B, H, Q, 2C / H) queries, (B, H, S, 2C / H) keys and (B, H, S, C / H) values."""
        if key is None or key_pos is None or query_sine_embed is None:
            raise ValueError('conditional cross-attention needs key, key_pos and '
                             'query_sine_embed')
        q_content = self.qcontent_proj(query)
        k_content = self.kcontent_proj(key)
        k_pos = self.kpos_proj(key_pos)
        if self.with_query_pos:
            if query_pos is None:
                raise ValueError('this cross-attention adds query_pos (with_query_pos=True); '
                                 'pass it')
            q_content = q_content + self.qpos_proj(query_pos)
            k_content = k_content + k_pos
        q_sine = self.qpos_sine_proj(query_sine_embed)
        heads = self.num_heads
        q = torch.cat([_heads(q_content, heads), _heads(q_sine, heads)], dim=-1)
        k = torch.cat([_heads(k_content, heads), _heads(k_pos, heads)], dim=-1)
        return q, k, _heads(self.v_proj(key), heads)
