"""Self-attention of the DETR decoders: ``nn.MultiheadAttention`` with positions and a residual."""
from __future__ import annotations

from torch import Tensor, nn

from codetr.registry import MODELS


@MODELS.register_module()
class MultiheadAttention(nn.Module):
    """Multi-head attention whose query and key carry positional embeddings.

    The wrapped module is stored as ``attn`` so parameters are named
    ``attn.in_proj_weight``, ``attn.in_proj_bias``, ``attn.out_proj.*`` as in MMDetection.

    Args:
        embed_dims: channels C.
        num_heads: attention heads; must divide ``embed_dims``.
        attn_drop: dropout on the attention weights.
        proj_drop: dropout on the attention output, before the residual.
        dropout: shorthand used by DETR configs; overrides both dropouts when given.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, dropout: float | None = None) -> None:
        super().__init__()
        if embed_dims % num_heads != 0:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by num_heads '
                             f'({num_heads})')
        if dropout is not None:
            attn_drop = proj_drop = dropout
        self.embed_dims = embed_dims
        self.attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=attn_drop,
                                          batch_first=True)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                identity: Tensor | None = None, query_pos: Tensor | None = None,
                key_pos: Tensor | None = None, attn_mask: Tensor | None = None,
                key_padding_mask: Tensor | None = None) -> Tensor:
        """Attend from ``query + query_pos`` to ``key + key_pos`` and add the residual.

        Args:
            query: (B, Q, C).
            key: (B, S, C); defaults to ``query`` (self-attention).
            value: (B, S, C); defaults to ``key``. Positions are never added to it.
            identity: (B, Q, C) residual; defaults to ``query``.
            query_pos: (B, Q, C) or None.
            key_pos: (B, S, C); defaults to ``query_pos`` when key and query have one shape.
            attn_mask: (Q, S) bool, True where query i may NOT attend to key j.
            key_padding_mask: (B, S) bool, True on padded keys.

        Returns:
            (B, Q, C) ``identity + dropout(attention output)``.
        """
        key = query if key is None else key
        value = key if value is None else value
        identity = query if identity is None else identity
        if key_pos is None and query_pos is not None and query_pos.shape == key.shape:
            key_pos = query_pos
        if query_pos is not None:
            query = query + query_pos
        if key_pos is not None:
            key = key + key_pos
        out = self.attn(query, key, value, attn_mask=attn_mask,
                        key_padding_mask=key_padding_mask, need_weights=False)[0]
        return identity + self.proj_drop(out)
