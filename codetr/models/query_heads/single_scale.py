"""Pieces shared by the single-scale (C5) query heads, CoConditionalDETRHead and CoDABDETRHead.

Their encoder sees one feature map: it is flattened with its padding mask and sine positions
(:func:`flatten_single_map`), encoded, and handed on as a :class:`SingleScaleMemory`, which the
decoder passes (matching queries and every aux head's positive queries) all attend to and
which the adapter sees as one map.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mmengine.structures import InstanceData
from torch import Tensor, nn

from ..layers.transformer import MLP
from .co_dino_head import level_padding_masks
from .postprocess import detr_postprocess

# Initial foreground probability of the classifier (focal-loss prior; both papers' heads).
PRIOR_PROB = 0.01
# Hungarian matching costs of both papers and of MMDetection's configs: focal 2, L1 5, GIoU 2.
DETR_MATCH_COSTS = [dict(type='FocalLossCost', weight=2.0),
                    dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                    dict(type='IoUCost', iou_mode='giou', weight=2.0)]
DEFAULT_LOSS_BBOX = dict(type='L1Loss', loss_weight=5.0)
DEFAULT_LOSS_IOU = dict(type='GIoULoss', loss_weight=2.0)


@dataclass
class SingleScaleMemory:
    """The encoder output of a single-scale DETR, flattened.

    Attributes:
        memory: (B, S, C) encoder output, ``S = h * w``.
        pos: (B, S, C) sine positions of the map.
        mask: (B, S) bool, True on padding.
        shape: ``(h, w)`` of the map.
    """

    memory: Tensor
    pos: Tensor
    mask: Tensor
    shape: tuple[int, int]

    def as_map(self) -> Tensor:
        """(B, C, h, w): the memory as the one level the adapter takes."""
        batch, _, dims = self.memory.shape
        return self.memory.transpose(1, 2).reshape(batch, dims, *self.shape)


def flatten_single_map(feats: list[Tensor], data_samples: list[Any],
                       positional_encoding: nn.Module) -> tuple[Tensor, Tensor, Tensor]:
    """The one map of a single-scale head, flattened.

    Args:
        feats: one map (B, C, h, w) (the neck's C5 projection, or an encoder output).
        data_samples: with metainfo ``img_shape`` and ``batch_input_shape``.
        positional_encoding: ``SinePositionalEncoding`` of ``C / 2`` features per axis.

    Returns:
        (B, S, C) features, (B, S, C) positions and (B, S) bool padding mask.
    """
    if len(feats) != 1:
        raise ValueError(f'a single-scale DETR head takes one feature map (C5), got {len(feats)} '
                         'levels: set the neck to num_outs=1 and the backbone to '
                         'out_indices=(3,)')
    feat = feats[0]
    mask = level_padding_masks(feats, data_samples)[0]  # [B, h, w]
    pos = positional_encoding(mask).to(feat)  # [B, C, h, w]
    return (feat.flatten(2).transpose(1, 2), pos.flatten(2).transpose(1, 2), mask.flatten(1))


def encode_single_map(feats: list[Tensor], data_samples: list[Any],
                      positional_encoding: nn.Module,
                      encoder: nn.Module | None = None) -> SingleScaleMemory:
    """Flatten the one map and run ``encoder(features, positions, mask)`` over it.

    Without ``encoder`` the map is taken as the encoder output already (a plain list that
    ``loss_aux`` was given instead of the ``EncodedLevels`` of ``loss``).
    """
    src, pos, mask = flatten_single_map(feats, data_samples, positional_encoding)
    memory = src if encoder is None else encoder(src, pos, mask)
    return SingleScaleMemory(memory, pos, mask, tuple(feats[0].shape[-2:]))


def check_positional_encoding(encoding: nn.Module, embed_dims: int) -> None:
    if 2 * encoding.num_feats != embed_dims:
        raise ValueError(f'positional_encoding.num_feats={encoding.num_feats} must be half of '
                         f'embed_dims={embed_dims}')


def prediction_branches(embed_dims: int, num_classes: int,
                        num_reg_layers: int) -> tuple[nn.Linear, MLP]:
    """The classifier and the box MLP shared by every decoder layer (both papers)."""
    return nn.Linear(embed_dims, num_classes), MLP(embed_dims, embed_dims, 4, num_reg_layers)


def init_prediction_branches(cls_branch: nn.Linear, reg_branch: MLP) -> None:
    """Class bias at the focal prior 0.01; the last box layer at zero, so the first boxes are
    the references."""
    nn.init.constant_(cls_branch.bias, -math.log((1 - PRIOR_PROB) / PRIOR_PROB))
    nn.init.zeros_(reg_branch.layers[-1].weight)
    nn.init.zeros_(reg_branch.layers[-1].bias)


def detections(cls_scores: Tensor, bbox_preds: Tensor, data_samples: list[Any],
               test_cfg: dict, rescale: bool) -> list[InstanceData]:
    """Per image: top ``max_per_img`` (query, class) pairs of the last layer.

    Args:
        cls_scores: (B, Q, K) float32 logits; bbox_preds: (B, Q, 4) normalised ``cxcywh``.
    """
    return [detr_postprocess(cls_scores[i], bbox_preds[i], sample.metainfo,
                             max_per_img=test_cfg['max_per_img'],
                             score_thr=test_cfg.get('score_thr', 0.0), nms=test_cfg.get('nms'),
                             rescale=rescale)
            for i, sample in enumerate(data_samples)]
