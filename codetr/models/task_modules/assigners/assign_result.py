"""The outcome of assigning predictions (queries, anchors, proposals) to GT boxes."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class AssignResult:
    """Which GT box, if any, each of ``num_preds`` predictions is assigned to.

    Args:
        num_gts: number of GT boxes of the image.
        gt_inds: ``(num_preds,)`` long, **1-based** GT index; 0 = background, -1 = ignored.
        max_overlaps: ``(num_preds,)`` IoU with the assigned GT, or ``None`` when the assigner
            does not compute overlaps (Hungarian matching).
        labels: ``(num_preds,)`` long class of the assigned GT; -1 where unassigned.
    """

    def __init__(self, num_gts: int, gt_inds: Tensor, max_overlaps: Tensor | None,
                 labels: Tensor | None) -> None:
        self.num_gts = num_gts
        self.gt_inds = gt_inds
        self.max_overlaps = max_overlaps
        self.labels = labels
        self._extra_properties: dict[str, Any] = {}

    @property
    def num_preds(self) -> int:
        """Number of predictions that were assigned."""
        return len(self.gt_inds)

    @property
    def info(self) -> dict[str, Any]:
        """Every field, extra properties included, as a dict."""
        return dict(num_gts=self.num_gts, num_preds=self.num_preds, gt_inds=self.gt_inds,
                    max_overlaps=self.max_overlaps, labels=self.labels,
                    **self._extra_properties)

    def set_extra_property(self, key: str, value: Any) -> None:
        """Attach assigner-specific data (e.g. ``'pos_idx'``); built-in names are refused."""
        if key in self.info:
            raise KeyError(f'{key!r} is already a field of AssignResult')
        self._extra_properties[key] = value

    def get_extra_property(self, key: str) -> Any:
        """The extra property ``key``, or ``None``."""
        return self._extra_properties.get(key)

    def add_gt_(self, gt_labels: Tensor) -> None:
        """Prepend the GT boxes themselves as predictions assigned to themselves, in place.

        Samplers with ``add_gt_as_proposals=True`` call this after putting the GT boxes in
        front of the proposals: GT ``i`` gets ``gt_inds = i + 1``, overlap 1 and its label.

        Args:
            gt_labels: ``(num_gts,)`` labels of the GT boxes.
        """
        self_inds = torch.arange(1, len(gt_labels) + 1, dtype=torch.long,
                                 device=gt_labels.device)
        self.gt_inds = torch.cat([self_inds, self.gt_inds])
        if self.max_overlaps is not None:
            self.max_overlaps = torch.cat(
                [self.max_overlaps.new_ones(len(gt_labels)), self.max_overlaps])
        if self.labels is not None:
            self.labels = torch.cat([gt_labels.to(self.labels.dtype), self.labels])

    def __repr__(self) -> str:
        num_pos = int((self.gt_inds > 0).sum())
        return (f'<AssignResult num_gts={self.num_gts} num_preds={self.num_preds} '
                f'num_pos={num_pos}>')
