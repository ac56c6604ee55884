"""What an auxiliary head hands to the decoder: its positive anchors / proposals.

Every aux head's ``loss`` returns one :class:`AuxPositives`. The query head turns its boxes
into customised positive queries and trains the shared decoder on them with the fixed
targets stored here (no matching).

Selection rule (the official implementation's): ``M = clamp(max positives over the batch,
MIN_POS_COORDS, max_pos_coords)``. An image with more than ``M`` positives keeps a random
subset of ``M``; an image with fewer is padded with randomly chosen negatives of the same
head, which keep label weight 1 (they are trained as background) and get bbox weight 0.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

# Smallest number of positive queries per image (official Co-DETR, ``get_aux_targets``).
MIN_POS_COORDS = 9
# Largest number of positive queries per image (official ``max_pos_coords``).
MAX_POS_COORDS = 300


@dataclass
class AuxPositives:
    """One aux head's positives for a batch; ``M`` is the same for every image.

    Attributes:
        coords: ``(B, M, 4)`` xyxy boxes, network-input pixels: the positive anchors,
            proposals or point boxes the queries are made from.
        labels: ``(B, M)`` long class of each coord; ``num_classes`` = background.
        targets: ``(B, M, 4)`` xyxy ground-truth boxes assigned to each coord (any value
            where ``bbox_weights`` is 0).
        label_weights: ``(B, M)`` float classification weight (1 for positives and for
            padding negatives).
        bbox_weights: ``(B, M)`` float box-loss weight (1 for positives, 0 for padding).
        feats: optional ``(B, M, C)`` feature of each coord (the pyramid feature at the
            anchor / point, or the RoI feature averaged), used by Co-Deformable-DETR.
    """

    coords: Tensor
    labels: Tensor
    targets: Tensor
    label_weights: Tensor
    bbox_weights: Tensor
    feats: Tensor | None = None

    @property
    def num_queries(self) -> int:
        return self.coords.shape[1]

    def to(self, *args, **kwargs) -> AuxPositives:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return AuxPositives(**{k: v if v is None else v.to(*args, **kwargs)
                               for k, v in moved.items()})


def select_positives(coords: list[Tensor], labels: list[Tensor], targets: list[Tensor],
                     num_classes: int, feats: list[Tensor] | None = None,
                     max_pos_coords: int = MAX_POS_COORDS,
                     min_pos_coords: int = MIN_POS_COORDS) -> AuxPositives:
    """Batch per-image candidates into :class:`AuxPositives` with the official rule.

    Args:
        coords: per image ``(N_i, 4)`` xyxy candidate boxes (all anchors / sampled RoIs).
        labels: per image ``(N_i,)`` assigned labels; ``num_classes`` = background, and
            negative values (ignored candidates) are neither positives nor padding.
        targets: per image ``(N_i, 4)`` xyxy assigned ground-truth boxes.
        num_classes: the background label.
        feats: optional per image ``(N_i, C)`` features of the candidates.
        max_pos_coords: upper bound of ``M``.
        min_pos_coords: lower bound of ``M``.

    Returns:
        The batched positives. When an image has fewer negatives than padding slots, the
        remaining slots are zero boxes labelled background with both weights 0.
    """
    pos_inds = [((lab >= 0) & (lab < num_classes)).nonzero().squeeze(1) for lab in labels]
    neg_inds = [(lab == num_classes).nonzero().squeeze(1) for lab in labels]
    most = max((len(p) for p in pos_inds), default=0)
    m = max(min_pos_coords, min(max_pos_coords, most))
    picked = [_pick(pos, neg, m) for pos, neg in zip(pos_inds, neg_inds)]

    def gather(per_image: list[Tensor], fill: float) -> Tensor:
        out = []
        for values, (keep, _) in zip(per_image, picked):
            chosen = values[keep]
            pad = m - len(keep)
            if pad:
                chosen = torch.cat([chosen, chosen.new_full((pad, *chosen.shape[1:]), fill)])
            out.append(chosen)
        return torch.stack(out)

    label_weights, bbox_weights = [], []
    for keep, num_pos in picked:
        device = keep.device
        lw = torch.zeros(m, device=device)
        lw[:len(keep)] = 1.0
        bw = torch.zeros(m, device=device)
        bw[:num_pos] = 1.0
        label_weights.append(lw)
        bbox_weights.append(bw)
    like = coords[0]
    return AuxPositives(
        coords=gather(coords, 0.0),
        labels=gather(labels, num_classes).long(),
        targets=gather(targets, 0.0),
        label_weights=torch.stack(label_weights).to(like.dtype),
        bbox_weights=torch.stack(bbox_weights).to(like.dtype),
        feats=None if feats is None else gather(feats, 0.0))


def _pick(pos: Tensor, neg: Tensor, m: int) -> tuple[Tensor, int]:
    """Indices to keep for one image (positives first) and how many are positives."""
    if len(pos) > m:
        pos = pos[torch.randperm(len(pos), device=pos.device)[:m]]
    pad = m - len(pos)
    if pad and len(neg):
        neg = neg[torch.randperm(len(neg), device=neg.device)[:pad]]
        return torch.cat([pos, neg]), len(pos)
    return pos, len(pos)
