"""PositiveQueryGenerator: an aux head's positive boxes as customised decoder queries.

Co-DETR (paper section 3.3) encodes the positive anchors / proposals of every auxiliary head
as extra queries for the shared decoder, one group per head, with one generator per head:

- ``mode='dino'`` (Co-DINO): ``query = LN(Linear(2C -> C)(sine(boxes)))``; the DINO decoder
  computes ``query_pos`` from the reference boxes itself, so none is returned.
- ``mode='deformable'`` (Co-Deformable-DETR): ``LN(Linear(2C -> 2C)(sine(boxes)))`` split into
  ``query_pos`` (first C) and ``query`` (last C); with ``with_coord_feat`` the feature of each
  anchor / RoI is added to the query (``LN(Linear(C -> C)(feats))``) and a learned per-head
  embedding to ``query_pos``.

``sine`` is the two-stage proposal embedding (official ``get_proposal_pos_embed``): C / 2
features per coordinate in the order ``cx, cy, w, h``, temperature 10000, scale 2 pi, of the
boxes clamped to [0, 1] (the official code embeds ``sigmoid(inverse_sigmoid(boxes))``).

Parameter names and the official layout (for checkpoint conversion): the official
``transformer.aux_pos_trans.{i}`` / ``aux_pos_trans_norm.{i}`` become ``pos_trans`` /
``pos_trans_norm`` of the generator of head ``i``; ``pos_feats_trans.{i}`` /
``pos_feats_norm.{i}`` become ``feats_trans`` / ``feats_norm``; ``head_pos_embed.weight[i]``
becomes ``head_pos_embed``. Official head index ``i`` counts the RoI heads first, then the
one-stage heads (``rcnn`` = 0, ``atss`` = 1 in the Co-DINO R50 configs).
"""
from __future__ import annotations

import math

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from codetr.registry import MODELS

from ..layers.transformer import coordinate_to_encoding, inverse_sigmoid

# Sine embedding of positive boxes: the official ``get_proposal_pos_embed`` settings.
POS_EMBED_TEMPERATURE = 10000.0
POS_EMBED_SCALE = 2 * math.pi
MODES = ('dino', 'deformable')


def positive_box_embedding(boxes: Tensor, num_feats: int) -> Tensor:
    """Sine embedding of normalised boxes, as the official positive-query encoding.

    Args:
        boxes: (B, M, 4) ``cxcywh`` normalised by ``img_shape`` (may leave [0, 1]; clamped).
        num_feats: features per coordinate (``embed_dims / 2``).

    Returns:
        (B, M, 4 * num_feats) float32 ordered ``[cx, cy, w, h]``, each ``[sin, cos, ...]``.
    """
    # The official code embeds sigmoid(inverse_sigmoid(boxes)) (eps 1e-5): a clamp to [0, 1].
    clamped = inverse_sigmoid(boxes).sigmoid()
    # coordinate_to_encoding emits its input's (1, 0, 2, 3) order; feeding (cy, cx, w, h)
    # gives the official (cx, cy, w, h).
    return coordinate_to_encoding(clamped[..., [1, 0, 2, 3]], num_feats=num_feats,
                                  temperature=POS_EMBED_TEMPERATURE, scale=POS_EMBED_SCALE)


@MODELS.register_module()
class PositiveQueryGenerator(BaseModule):
    """Customised positive queries of one auxiliary head.

    Args:
        embed_dims: decoder width C.
        mode: ``'dino'`` (content query only) or ``'deformable'`` (content + positional).
        with_coord_feat: ``'deformable'`` only: add the anchor / RoI feature to the query and
            a per-head embedding to the positional query (official Co-Deformable-DETR: True).
        head_pos_dims: width of that per-head embedding. 1 reproduces the official R50
            release, whose ``nn.Embedding(K, 1, ...)`` adds one learned scalar to every channel;
            ``embed_dims`` gives the per-channel embedding its authors intended.
        init_cfg: mmengine initialisation config.
    """

    def __init__(self, embed_dims: int = 256, mode: str = 'dino', with_coord_feat: bool = False,
                 head_pos_dims: int = 1, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if mode not in MODES:
            raise ValueError(f'PositiveQueryGenerator mode={mode!r} must be one of {MODES}')
        if mode == 'dino' and with_coord_feat:
            raise ValueError("with_coord_feat=True needs mode='deformable': Co-DINO's positive "
                             'queries carry no anchor feature')
        if head_pos_dims not in (1, embed_dims):
            raise ValueError(f'head_pos_dims={head_pos_dims} must be 1 (official R50) or '
                             f'embed_dims={embed_dims}')
        self.embed_dims = embed_dims
        self.mode = mode
        self.with_coord_feat = with_coord_feat
        out_dims = embed_dims if mode == 'dino' else 2 * embed_dims
        self.pos_trans = nn.Linear(2 * embed_dims, out_dims)
        self.pos_trans_norm = nn.LayerNorm(out_dims)
        if with_coord_feat:
            self.feats_trans = nn.Linear(embed_dims, embed_dims)
            self.feats_norm = nn.LayerNorm(embed_dims)
            # Zero start: the positional query begins as the box embedding alone.
            self.head_pos_embed = nn.Parameter(torch.zeros(head_pos_dims))

    def init_weights(self) -> None:
        """Xavier-uniform matrices, as the official transformer's ``init_weights``; biases and
        norms keep PyTorch's defaults."""
        for layer in (self.pos_trans, getattr(self, 'feats_trans', None)):
            if layer is not None:
                nn.init.xavier_uniform_(layer.weight)

    def forward(self, boxes: Tensor, feats: Tensor | None = None
                ) -> tuple[Tensor, Tensor | None]:
        """Queries for the positive boxes of one head.

        Args:
            boxes: (B, M, 4) ``cxcywh`` normalised by each image's ``img_shape``.
            feats: (B, M, C) feature of each box; required when ``with_coord_feat``.

        Returns:
            query (B, M, C) and query_pos (B, M, C) (``None`` in ``'dino'`` mode, where the
            decoder derives it from the reference boxes).
        """
        embed = positive_box_embedding(boxes, self.embed_dims // 2).to(self.pos_trans.weight)
        out = self.pos_trans_norm(self.pos_trans(embed))  # [B, M, C or 2C]
        if self.mode == 'dino':
            return out, None
        query_pos, query = out.split(self.embed_dims, dim=-1)
        if self.with_coord_feat:
            if feats is None:
                raise ValueError('this positive-query generator has with_coord_feat=True but '
                                 'the aux head returned no feats in its AuxPositives; return '
                                 'them from the head or set with_coord_feat=False')
            query = query + self.feats_norm(self.feats_trans(feats))
            query_pos = query_pos + self.head_pos_embed
        return query, query_pos
