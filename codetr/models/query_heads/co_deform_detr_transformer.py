"""The transformer of Co-Deformable-DETR's one-to-one branch (Deformable-DETR++).

Deformable encoder, two-stage proposal selection, mixed query selection and a refining
Deformable-DETR decoder with look-forward-twice. Parameter names follow the official
release (``level_embeds``, ``enc_output``, ``enc_output_norm``, ``pos_trans``,
``pos_trans_norm``, ``encoder.layers.i``, ``decoder.layers.i``) so its checkpoints map onto
this module with the layer renames only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from codetr.registry import MODELS

from ..layers.transformer import coordinate_to_encoding, gen_encoder_output_proposals
from ..layers.transformer.layers import init_detr_weights
from ..layers.transformer.utils import get_valid_ratio
from ..utils import at_least_float32, to_float32

# Sine embedding of the proposal boxes (official ``get_proposal_pos_embed``).
PROPOSAL_EMBED_TEMPERATURE = 10000.0


def proposal_pos_embed(boxes: Tensor, num_feats: int) -> Tensor:
    """Sine embedding of two-stage proposals (official ``get_proposal_pos_embed``).

    Args:
        boxes: (B, Q, 4) ``cxcywh`` in [0, 1].
        num_feats: features per coordinate (``embed_dims / 2``).

    Returns:
        (B, Q, 4 * num_feats) ordered ``[cx, cy, w, h]``, each ``[sin, cos, sin, ...]``.
    """
    # coordinate_to_encoding emits (y, x, w, h) of its input; feeding (cy, cx, w, h) gives
    # the official (cx, cy, w, h) order.
    return coordinate_to_encoding(boxes[..., [1, 0, 2, 3]], num_feats=num_feats,
                                  temperature=PROPOSAL_EMBED_TEMPERATURE)


@dataclass
class FlatPyramid:
    """A multi-level feature pyramid flattened for the deformable attention.

    Attributes:
        feats: (B, S, C) features, ``S = sum(h_l * w_l)``.
        mask: (B, S) bool, True on padding.
        pos: (B, S, C) sine positional encoding plus the level embedding.
        spatial_shapes: (L, 2) long ``(h, w)`` per level.
        level_start_index: (L,) long offset of each level in ``S``.
        valid_ratios: (B, L, 2) ``(w, h)`` fraction of each map that holds the image.
    """

    feats: Tensor
    mask: Tensor
    pos: Tensor
    spatial_shapes: Tensor
    level_start_index: Tensor
    valid_ratios: Tensor


@MODELS.register_module()
class CoDeformableDetrTransformer(BaseModule):
    """Encoder + two-stage mixed query selection + refining decoder.

    Args:
        encoder: ``DeformableDetrTransformerEncoder`` config.
        decoder: ``DeformableDetrTransformerDecoder`` config (Co-Deformable-DETR sets
            ``look_forward_twice=True``).
        num_feature_levels: number of pyramid levels L (4 for R50: C3-C5 + one extra).
        init_cfg: mmengine initialisation config.
    """

    def __init__(self, encoder: dict, decoder: dict, num_feature_levels: int = 4,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.encoder = MODELS.build(encoder)
        self.decoder = MODELS.build(decoder)
        self.embed_dims = self.encoder.embed_dims
        if self.decoder.embed_dims != self.embed_dims:
            raise ValueError(f'encoder width {self.embed_dims} != decoder width '
                             f'{self.decoder.embed_dims}: set the same embed_dims in both')
        self.num_feature_levels = num_feature_levels
        dims = self.embed_dims
        # zeros until init_weights() draws them: a model built without it holds no garbage
        self.level_embeds = nn.Parameter(torch.zeros(num_feature_levels, dims))
        self.enc_output = nn.Linear(dims, dims)
        self.enc_output_norm = nn.LayerNorm(dims)
        self.pos_trans = nn.Linear(dims * 2, dims * 2)
        self.pos_trans_norm = nn.LayerNorm(dims * 2)

    @property
    def num_layers(self) -> int:
        """Number of decoder layers N."""
        return len(self.decoder.layers)

    def init_weights(self) -> None:
        """Xavier matrices, the attention's own scheme, normal level embeddings (official)."""
        init_detr_weights(self)
        nn.init.normal_(self.level_embeds)

    def flatten(self, feats: list[Tensor], masks: list[Tensor],
                pos_embeds: list[Tensor]) -> FlatPyramid:
        """Flatten L levels of (B, C, h, w) features, (B, h, w) masks and encodings."""
        if len(feats) != self.num_feature_levels:
            raise ValueError(f'got {len(feats)} feature levels but the transformer was built '
                             f'with num_feature_levels={self.num_feature_levels}')
        shapes = [feat.shape[-2:] for feat in feats]
        pos = [p.flatten(2).transpose(1, 2) + self.level_embeds[lvl]
               for lvl, p in enumerate(pos_embeds)]
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=feats[0].device)
        areas = spatial_shapes.prod(1)
        return FlatPyramid(
            feats=torch.cat([f.flatten(2).transpose(1, 2) for f in feats], 1),
            mask=torch.cat([m.flatten(1) for m in masks], 1),
            pos=torch.cat(pos, 1),
            spatial_shapes=spatial_shapes,
            level_start_index=torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]]),
            valid_ratios=torch.stack([get_valid_ratio(m) for m in masks], 1).to(
                feats[0].device, at_least_float32(feats[0].dtype)))

    def encode(self, flat: FlatPyramid) -> Tensor:
        """(B, S, C) encoder memory."""
        return self.encoder(flat.feats, flat.pos, flat.mask, flat.spatial_shapes,
                            flat.level_start_index, flat.valid_ratios)

    def select_proposals(self, memory: Tensor, flat: FlatPyramid, cls_branch: nn.Module,
                         reg_branch: nn.Module, num_queries: int
                         ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Two-stage: score one proposal per memory position, keep the top ``num_queries``.

        Proposals are ranked by their logit of class 0, as Deformable-DETR and the official
        Co-Deformable-DETR do (not by the maximum over classes, as DINO).

        Returns:
            enc_cls_scores: (B, S, num_classes) logits of every proposal.
            enc_coords_unact: (B, S, 4) ``cxcywh`` logits of every proposal (``+inf`` where
                the position is padding or too close to the border).
            reference_points: (B, Q, 4) detached ``cxcywh`` in [0, 1] of the chosen ones.
            query_pos: (B, Q, C) positional queries embedded from those boxes.
        """
        if memory.size(1) < num_queries:
            raise ValueError(f'the feature maps hold {memory.size(1)} positions, fewer than '
                             f'num_queries={num_queries} proposals to select: use larger input '
                             'images or fewer queries')
        # proposals are built in the memory's dtype: float32, not autocast's bfloat16
        output_memory, proposals = gen_encoder_output_proposals(to_float32(memory), flat.mask,
                                                                flat.spatial_shapes)
        output_memory = self.enc_output_norm(self.enc_output(output_memory))
        enc_cls_scores = cls_branch(output_memory)
        enc_coords_unact = reg_branch(output_memory) + proposals
        topk = torch.topk(enc_cls_scores[..., 0], num_queries, dim=1)[1]  # [B, Q]
        topk_coords = torch.gather(enc_coords_unact, 1, topk[..., None].expand(-1, -1, 4))
        reference_points = topk_coords.detach().sigmoid()
        embed = proposal_pos_embed(reference_points, self.embed_dims // 2)
        pos_trans_out = self.pos_trans_norm(self.pos_trans(embed.to(memory)))
        # Mixed query selection: only the positional half is taken from the proposals.
        query_pos = pos_trans_out[..., :self.embed_dims]
        return enc_cls_scores, enc_coords_unact, reference_points, query_pos

    def decode(self, query: Tensor, query_pos: Tensor, memory: Tensor, flat: FlatPyramid,
               reference_points: Tensor, reg_branches: nn.ModuleList,
               value_cache: dict | None = None) -> tuple[Tensor, Tensor]:
        """Run the decoder with box refinement; ``value_cache``, a dict shared by every pass
        over the same ``memory``, lets each layer project it once.

        Returns:
            hidden_states: (N, B, Q, C).
            references: (N + 1, B, Q, 4): the input boxes, then each layer's refined boxes
                (undetached with look-forward-twice).
        """
        return self.decoder(query=query, query_pos=query_pos, value=memory,
                            key_padding_mask=flat.mask, reference_points=reference_points,
                            spatial_shapes=flat.spatial_shapes,
                            level_start_index=flat.level_start_index,
                            valid_ratios=flat.valid_ratios, reg_branches=reg_branches,
                            value_cache=value_cache)
