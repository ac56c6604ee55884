"""Co-DINO's transformer: deformable encoder, two-stage query selection, DINO decoder.

The wrapper owns the parameters that sit between the encoder and the decoder, named as the
MMDetection port's ``CoDinoTransformer`` (``level_embeds``, ``enc_output``,
``enc_output_norm``, ``query_embed``, ``encoder``, ``decoder``) so official checkpoints load by
name. It owns no prediction branch: the head passes its ``cls_branches`` / ``reg_branches``.

The three stages are separate methods so that other passes can reuse them: :meth:`encode`
(flatten + encoder), :meth:`select_queries` (two-stage proposals, mixed query selection) and
:meth:`decode` (one decoder pass from given queries and reference boxes, as the positive-query
branches of Co-DETR need).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from codetr.registry import MODELS

from ..layers.transformer import gen_encoder_output_proposals, get_valid_ratio
from ..utils import to_float32

# Official Co-DINO R50 (5 levels) transformer, from the Co-DETR configs: 6 + 6 layers, 8 heads,
# 4 sampling points, FFN 2048, no dropout; the first 4 encoder layers are checkpointed.
_MSDA_5_LEVELS = dict(embed_dims=256, num_heads=8, num_levels=5, num_points=4, dropout=0.0)
_FFN = dict(embed_dims=256, feedforward_channels=2048, ffn_drop=0.0)
CO_DINO_R50_TRANSFORMER = dict(
    type='CoDinoTransformer', num_feature_levels=5,
    encoder=dict(type='DeformableDetrTransformerEncoder', num_layers=6, num_cp=4,
                 layer_cfg=dict(self_attn_cfg=_MSDA_5_LEVELS, ffn_cfg=_FFN)),
    decoder=dict(type='DinoTransformerDecoder', num_layers=6, return_intermediate=True,
                 layer_cfg=dict(self_attn_cfg=dict(embed_dims=256, num_heads=8, dropout=0.0),
                                cross_attn_cfg=_MSDA_5_LEVELS, ffn_cfg=_FFN)))


@dataclass
class EncoderOutput:
    """The encoded, flattened pyramid and its geometry (``S = sum(h_l * w_l)``).

    Attributes:
        memory: (B, S, C) encoder output.
        memory_mask: (B, S) bool, True on padding.
        spatial_shapes: (L, 2) long ``(h, w)`` per level.
        level_start_index: (L,) long offset of each level in S.
        valid_ratios: (B, L, 2) ``(w, h)`` fraction of each level holding the image.
        value_cache: the decoder layers' projections of ``memory``, filled by the first
            decoder pass over it and reused by the later ones (see ``EncodedLevels``).
    """

    memory: Tensor
    memory_mask: Tensor
    spatial_shapes: Tensor
    level_start_index: Tensor
    valid_ratios: Tensor
    value_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_levels(cls, levels: list[Tensor], masks: list[Tensor]) -> EncoderOutput:
        """Flatten L maps (B, C, h_l, w_l) and masks (B, h_l, w_l) (True on padding).

        Used for the encoder's input and, by the positive-query branch, to rebuild the
        encoder output from the per-level memory that :meth:`split_levels` gave out.
        """
        shapes = [level.shape[-2:] for level in levels]
        flat = torch.cat([lvl.flatten(2).transpose(1, 2) for lvl in levels], 1)  # [B, S, C]
        mask_flat = torch.cat([m.flatten(1) for m in masks], 1)  # [B, S]
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=flat.device)
        level_start_index = torch.cat((spatial_shapes.new_zeros(1),
                                       spatial_shapes.prod(1).cumsum(0)[:-1]))
        valid_ratios = torch.stack([get_valid_ratio(m) for m in masks], 1)  # [B, L, 2]
        return cls(flat, mask_flat, spatial_shapes, level_start_index, valid_ratios)

    def split_levels(self) -> list[Tensor]:
        """The memory back as L maps ``(B, C, h_l, w_l)`` (the multi-scale adapter's input)."""
        batch, _, channels = self.memory.shape
        sizes = self.spatial_shapes.prod(1).tolist()
        chunks = self.memory.split(sizes, dim=1)
        return [chunk.transpose(1, 2).reshape(batch, channels, h, w)
                for chunk, (h, w) in zip(chunks, self.spatial_shapes.tolist())]


@dataclass
class SelectedQueries:
    """Two-stage selection: the top-k encoder proposals and the decoder's matching queries.

    Attributes:
        enc_scores: (B, K, C) class logits of the selected proposals (for ``enc_loss_*``).
        enc_boxes: (B, K, 4) refined proposal boxes, normalised ``cxcywh`` (with gradient).
        query: (B, K, C) content queries (the learned ``query_embed``, mixed selection).
        reference_points: (B, K, 4) ``enc_boxes`` detached: the decoder's initial boxes.
    """

    enc_scores: Tensor
    enc_boxes: Tensor
    query: Tensor
    reference_points: Tensor


@MODELS.register_module()
class CoDinoTransformer(BaseModule):
    """Deformable encoder + two-stage selection + DINO decoder of Co-DINO.

    Args:
        encoder: config of the encoder (``DeformableDetrTransformerEncoder``; its ``num_cp``
            sets activation checkpointing).
        decoder: config of the decoder (``DinoTransformerDecoder``).
        num_feature_levels: number of input levels L (5 for Co-DINO R50, 4 for Swin 4-scale).
        num_queries: number of matching queries K (the two-stage top-k), 900 officially.
        select_padding: let positions on batch padding compete in the top-k selection, as
            the official code and the MMDetection port do (their proposals are +inf, so a
            selected one starts as the box (1, 1, 1, 1)). False ranks them last, which makes
            an image's detections independent of how much the batch pads it.
        init_cfg: mmengine initialisation config.
    """

    def __init__(self, encoder: dict, decoder: dict, num_feature_levels: int = 5,
                 num_queries: int = 900, select_padding: bool = True,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.encoder = MODELS.build(copy.deepcopy(encoder))
        self.decoder = MODELS.build(copy.deepcopy(decoder))
        self.embed_dims = dims = self.encoder.embed_dims
        if self.decoder.embed_dims != dims:
            raise ValueError(f'encoder embed_dims {dims} != decoder embed_dims '
                             f'{self.decoder.embed_dims}; give both the same width')
        self.num_feature_levels = num_feature_levels
        self.num_queries = num_queries
        self.select_padding = select_padding
        # zeros until init_weights() draws them: a model built without it holds no garbage
        self.level_embeds = nn.Parameter(torch.zeros(num_feature_levels, dims))
        self.enc_output = nn.Linear(dims, dims)
        self.enc_output_norm = nn.LayerNorm(dims)
        self.query_embed = nn.Embedding(num_queries, dims)

    def init_weights(self) -> None:
        """Xavier matrices, the encoder's / decoder's own schemes, normal embeddings.

        The MMDetection port leaves ``level_embeds`` uninitialised (whatever memory held);
        here it is drawn from N(0, 1) as in Deformable-DETR.
        """
        for param in self.parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)
        self.encoder.init_weights()
        self.decoder.init_weights()
        nn.init.normal_(self.level_embeds)
        nn.init.normal_(self.query_embed.weight)

    def encode(self, feats: list[Tensor], masks: list[Tensor],
               pos_embeds: list[Tensor]) -> EncoderOutput:
        """Flatten the pyramid, add level embeddings and run the encoder.

        Args:
            feats: L maps (B, C, h_l, w_l).
            masks: L masks (B, h_l, w_l) bool, True on padding.
            pos_embeds: L positional encodings (B, C, h_l, w_l).
        """
        if len(feats) != self.num_feature_levels:
            raise ValueError(f'got {len(feats)} feature levels but the transformer has '
                             f'num_feature_levels={self.num_feature_levels}; make the neck '
                             'output and transformer.num_feature_levels agree')
        flat = EncoderOutput.from_levels(feats, masks)
        pos_flat = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embeds[lvl]
                              for lvl, p in enumerate(pos_embeds)], 1)  # [B, S, C]
        memory = self.encoder(flat.memory, pos_flat, flat.memory_mask, flat.spatial_shapes,
                              flat.level_start_index, flat.valid_ratios)
        return replace(flat, memory=memory, value_cache={})

    def select_queries(self, enc: EncoderOutput, cls_branch: nn.Module,
                       reg_branch: nn.Module) -> SelectedQueries:
        """Score every encoder position as a proposal and keep the top ``num_queries``.

        Positions are ranked by their largest class logit (DINO; Deformable-DETR uses class
        0). Mixed query selection: the decoder's content query is the learned
        ``query_embed``, its initial box the selected proposal (detached).
        """
        # proposals are built in the memory's dtype: float32, not autocast's bfloat16
        output_memory, proposals = gen_encoder_output_proposals(
            to_float32(enc.memory), enc.memory_mask, enc.spatial_shapes)
        output_memory = self.enc_output_norm(self.enc_output(output_memory))
        enc_logits = cls_branch(output_memory)  # [B, S, C]
        enc_coords = reg_branch(output_memory) + proposals  # [B, S, 4] logit space
        topk = self.num_queries
        if enc_logits.size(1) < topk:
            raise ValueError(f'the feature maps hold {enc_logits.size(1)} positions, fewer than '
                             f'num_queries={topk}; use larger inputs or fewer queries')
        ranking = enc_logits.max(-1)[0]  # [B, S]
        if not self.select_padding:
            ranking = ranking.masked_fill(enc.memory_mask, float('-inf'))
        topk_index = ranking.topk(topk, dim=1)[1]  # [B, K]
        scores = torch.gather(enc_logits, 1,
                              topk_index[..., None].expand(-1, -1, enc_logits.size(-1)))
        boxes = torch.gather(enc_coords, 1, topk_index[..., None].expand(-1, -1, 4)).sigmoid()
        batch = enc.memory.size(0)
        query = self.query_embed.weight[None].expand(batch, -1, -1)
        return SelectedQueries(scores, boxes, query, boxes.detach())

    def decode(self, query: Tensor, reference_points: Tensor, enc: EncoderOutput,
               reg_branches: nn.ModuleList, self_attn_mask: Tensor | None = None
               ) -> tuple[Tensor, Tensor]:
        """One decoder pass from given queries and boxes.

        Args:
            query: (B, Q, C) content queries.
            reference_points: (B, Q, 4) initial ``cxcywh`` boxes in [0, 1] of the valid image.
            enc: the encoder output the queries attend to.
            reg_branches: the head's per-layer box branches (box refinement).
            self_attn_mask: (Q, Q) bool, True where query i may NOT see query j, or None.

        Returns:
            hidden_states (N, B, Q, C) and references (N + 1, B, Q, 4), as
            :class:`DinoTransformerDecoder` returns them.
        """
        return self.decoder(query, enc.memory, enc.memory_mask, self_attn_mask,
                            reference_points, enc.spatial_shapes, enc.level_start_index,
                            enc.valid_ratios, reg_branches, value_cache=enc.value_cache)
