"""Shared pieces of the positive-query branch (``loss_aux``) of both query heads.

An aux head's :class:`AuxPositives` (pixel ``xyxy``) become decoder reference boxes and fixed
:class:`DetrTargets` (normalised ``cxcywh``): no matching happens for these queries.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from codetr.registry import MODELS
from codetr.structures import bbox_xyxy_to_cxcywh

from ..co_modules import AuxPositives
from .detr_criterion import DetrTargets, image_size_factors


class EncodedLevels(list):
    """The encoder output as L maps ``(B, C, h_l, w_l)`` (a plain list to the adapter), which
    also carries ``shared``: the query head's own flattened form of it (memory, masks,
    geometry) and the value projections its decoder layers made in the main pass.

    ``loss`` returns it; ``loss_aux`` given it decodes against that same flattened memory and
    reuses the projections instead of re-flattening the levels and projecting them again in
    every decoder layer of every positive-query pass (same values and gradients, up to
    float summation order; about a third less decoder work at K = 2). A plain list of maps
    works too, and is flattened afresh.
    """

    def __init__(self, levels: Sequence[Tensor], shared: Any) -> None:
        super().__init__(levels)
        self.shared = shared


def build_pos_query_generators(aux_head_names: Sequence[str], embed_dims: int,
                               cfg: dict) -> nn.ModuleDict:
    """One :class:`PositiveQueryGenerator` per aux head name, in the given order."""
    generators = nn.ModuleDict()
    for name in aux_head_names:
        if '.' in name:
            raise ValueError(f'aux head name {name!r} must not contain a dot (it names '
                             'parameters and loss keys); rename it in model.aux_heads')
        gen_cfg = {'type': 'PositiveQueryGenerator', **copy.deepcopy(cfg),
                   'embed_dims': embed_dims}
        generators[name] = MODELS.build(gen_cfg)
    return generators


def get_generator(generators: nn.ModuleDict, head_name: str) -> nn.Module:
    """The generator of ``head_name``, with an error naming the known heads."""
    if head_name not in generators:
        raise KeyError(f'no positive-query generator for aux head {head_name!r}; the query head '
                       f'was built with aux_head_names={list(generators)} (CoDETR sets them '
                       'from model.aux_heads)')
    return generators[head_name]


def aux_query_targets(positives: AuxPositives, img_metas: Sequence[dict[str, Any]],
                      num_classes: int) -> tuple[Tensor, DetrTargets]:
    """Reference boxes and fixed targets of one aux head's positive queries.

    Args:
        positives: ``coords`` / ``targets`` (B, M, 4) xyxy pixels of ``img_shape``, ``labels``
            (B, M) (``num_classes`` = background), ``label_weights`` / ``bbox_weights`` (B, M).
        img_metas: B metainfo dicts with ``img_shape``.
        num_classes: number of object classes.

    Returns:
        boxes: (B, M, 4) ``cxcywh`` of ``coords`` normalised by ``img_shape`` (detached; may
            leave [0, 1] for anchors crossing the border, as officially).
        targets: :class:`DetrTargets` whose ``num_pos`` counts the labelled positives of the
            batch (the official normaliser; the criterion averages it over ranks, clamp 1).
    """
    coords = positives.coords.detach().float()
    factors = image_size_factors(img_metas, coords)  # [B, 1, 4]
    boxes = bbox_xyxy_to_cxcywh(coords / factors)
    bbox_targets = bbox_xyxy_to_cxcywh(positives.targets.detach().to(coords) / factors)
    labels = positives.labels.long()
    # One host sync per aux head: the normaliser must be a number for the rank average.
    num_pos = int(((labels >= 0) & (labels < num_classes)).sum())
    bbox_weights = positives.bbox_weights.to(coords)[..., None].expand(-1, -1, 4).contiguous()
    targets = DetrTargets(labels=labels, label_weights=positives.label_weights.to(coords),
                          bbox_targets=bbox_targets, bbox_weights=bbox_weights, num_pos=num_pos)
    return boxes, targets
