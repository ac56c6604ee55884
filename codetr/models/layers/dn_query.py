"""Contrastive denoising (CDN) queries of DINO (Zhang et al. 2022, sec. 3.3), as Co-DINO uses.

Each ground-truth box enters the decoder several times with noise added: a *positive* copy
(small noise, trained to reconstruct the box and its class) and a *negative* copy (larger
noise, trained to predict "no object"). One positive and one negative copy of every GT of an
image form a *group*; groups cannot see each other, and the matching queries cannot see any
denoising query, so no answer leaks through self-attention.

Query layout of one image, with ``M`` = the largest GT count in the batch and ``G`` groups::

    [ g0 pos (M) | g0 neg (M) | g1 pos (M) | g1 neg (M) | ... ]   num_dn = 2 * M * G

slot ``j`` of each half holds GT ``j`` of the image; slots ``j >= n_gt`` are padding (zero
label embedding, zero box logits). The matching queries follow the denoising ones in the
decoder; the attention mask covers both.
"""
from __future__ import annotations

import torch
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor, nn

from codetr.registry import MODELS
from codetr.structures import bbox_xyxy_to_cxcywh

from .transformer.utils import inverse_sigmoid

# Clamp of inverse_sigmoid for the noisy boxes: MMDetection's CdnQueryGenerator uses 1e-3.
DN_INVERSE_SIGMOID_EPS = 1e-3
# DINO / MMDetection replace a label with probability label_noise_scale * 0.5.
LABEL_NOISE_FACTOR = 0.5


def dn_query_layout(num_gts: list[int], num_groups: int,
                    device: torch.device | None = None) -> dict[str, Tensor]:
    """Where every real (non-padding) denoising query sits, in the generator's flat order.

    The flat order is ``2 * num_groups`` chunks (pos, neg, pos, neg, ...), each the GTs of
    all images concatenated. Returns ``batch_idx``, ``query_idx`` (slot in ``[0, num_dn)``),
    ``gt_idx`` (index of the GT within its image) and ``positive`` (bool), each
    ``(2 * num_groups * sum(num_gts),)``.
    """
    max_gt = max(num_gts, default=0)
    # built from Python ints: no data-dependent shapes, so it also runs on the 'meta' device
    empty = torch.zeros(0, dtype=torch.long, device=device)
    batch_idx = torch.cat([empty] + [torch.full((n,), b, dtype=torch.long, device=device)
                                     for b, n in enumerate(num_gts)])
    gt_idx = torch.cat([empty] + [torch.arange(n, device=device) for n in num_gts])
    chunk = torch.arange(2 * num_groups, device=device)[:, None]  # (2G, 1)
    return dict(batch_idx=batch_idx.repeat(2 * num_groups),
                query_idx=(chunk * max_gt + gt_idx).flatten(),
                gt_idx=gt_idx.repeat(2 * num_groups),
                positive=(chunk % 2 == 0).expand(-1, len(gt_idx)).flatten())


@MODELS.register_module()
class CdnQueryGenerator(BaseModule):
    """Builds DINO's contrastive denoising queries, their attention mask and their targets.

    Args:
        num_classes: number of object classes (size of ``label_embedding``).
        embed_dims: width of the label queries.
        num_matching_queries: number of ordinary (matched) decoder queries, e.g. 900.
        label_noise_scale: a label is replaced by a uniformly random class with probability
            ``label_noise_scale * 0.5``.
        box_noise_scale: each xyxy corner moves by ``u * box_noise_scale * (w or h) / 2``,
            ``|u| < 1`` for positives and ``1 <= |u| < 2`` for negatives (normalised coords).
        group_cfg: ``dict(dynamic=True, num_dn_queries=100)``: groups = ``num_dn_queries //
            max GT per image`` (at least 1); or ``dict(dynamic=False, num_groups=G)``.
    """

    def __init__(self, num_classes: int, embed_dims: int, num_matching_queries: int,
                 label_noise_scale: float = 0.5, box_noise_scale: float = 1.0,
                 group_cfg: dict | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if label_noise_scale < 0 or box_noise_scale < 0:
            raise ValueError('CdnQueryGenerator noise scales must be >= 0, got '
                             f'label {label_noise_scale}, box {box_noise_scale}.')
        self.num_classes = num_classes
        self.embed_dims = embed_dims
        self.num_matching_queries = num_matching_queries
        self.label_noise_scale = label_noise_scale
        self.box_noise_scale = box_noise_scale
        group_cfg = {**dict(dynamic=True, num_groups=None, num_dn_queries=100), **(group_cfg or {})}
        self.dynamic_dn_groups = bool(group_cfg['dynamic'])
        key = 'num_dn_queries' if self.dynamic_dn_groups else 'num_groups'
        if not isinstance(group_cfg[key], int) or group_cfg[key] < 1:
            raise ValueError(f'CdnQueryGenerator group_cfg.{key} must be a positive int when '
                             f'dynamic={self.dynamic_dn_groups}, got {group_cfg[key]!r}.')
        self.num_dn_queries = group_cfg['num_dn_queries']
        self.num_groups = group_cfg['num_groups']
        self.label_embedding = nn.Embedding(num_classes, embed_dims)

    def get_num_groups(self, max_num_target: int) -> int:
        """Number of denoising groups for a batch whose busiest image has ``max_num_target`` GTs."""
        if not self.dynamic_dn_groups:
            return self.num_groups
        if max_num_target == 0:  # no GT anywhere: no denoising queries, one empty group
            return 1
        return max(1, self.num_dn_queries // max_num_target)

    def forward(self, batch_data_samples: list) -> tuple[Tensor, Tensor, Tensor, dict]:
        """Denoising queries for a batch (see the module docstring for the layout).

        Args:
            batch_data_samples: ``DetDataSample`` s with ``gt_instances.bboxes (N, 4)`` absolute
                xyxy pixels, ``gt_instances.labels (N,)`` and metainfo ``img_shape`` (h, w).

        Returns:
            dn_label_query: ``(B, num_dn, embed_dims)`` noisy label embeddings.
            dn_bbox_query: ``(B, num_dn, 4)`` noisy cxcywh boxes in inverse-sigmoid space.
            attn_mask: ``(num_dn + num_matching, num_dn + num_matching)`` bool, True = masked.
            dn_meta: ``num_denoising_queries`` (int), ``num_denoising_groups`` (int) and the
                targets: ``gt_indices (B, num_dn)`` long, the index into the image's
                ``gt_instances`` of the GT each query was made from, -1 for padding; and
                ``positive_mask (B, num_dn)`` bool, True for positive queries. The head's dn
                targets follow: label ``labels[gt]`` for positives and ``num_classes``
                (background) otherwise; box target ``bboxes[gt]`` for positives only.
        """
        weight = self.label_embedding.weight
        labels, boxes = self._gather_targets(batch_data_samples)
        num_gts = [len(label) for label in labels]
        max_gt = max(num_gts, default=0)
        num_groups = self.get_num_groups(max_gt)
        layout = dn_query_layout(num_gts, num_groups, weight.device)

        noisy_labels = self.add_label_noise(torch.cat(labels), num_groups)
        noisy_boxes = self.add_box_noise(torch.cat(boxes), num_groups)
        num_dn = 2 * max_gt * num_groups
        batch_size = len(batch_data_samples)
        slots = (layout['batch_idx'], layout['query_idx'])
        dn_label_query = weight.new_zeros(batch_size, num_dn, self.embed_dims)
        dn_label_query[slots] = self.label_embedding(noisy_labels)
        dn_bbox_query = weight.new_zeros(batch_size, num_dn, 4)
        dn_bbox_query[slots] = inverse_sigmoid(bbox_xyxy_to_cxcywh(noisy_boxes),
                                              DN_INVERSE_SIGMOID_EPS)
        gt_indices = torch.full((batch_size, num_dn), -1, dtype=torch.long, device=weight.device)
        gt_indices[slots] = layout['gt_idx']
        positive_mask = torch.zeros(batch_size, num_dn, dtype=torch.bool, device=weight.device)
        positive_mask[slots] = layout['positive']

        attn_mask = self.generate_dn_mask(max_gt, num_groups, weight.device)
        dn_meta = dict(num_denoising_queries=num_dn, num_denoising_groups=num_groups,
                       gt_indices=gt_indices, positive_mask=positive_mask)
        return dn_label_query, dn_bbox_query, attn_mask, dn_meta

    def _gather_targets(self, batch_data_samples: list) -> tuple[list[Tensor], list[Tensor]]:
        """Per image: labels ``(N,)`` long and boxes ``(N, 4)`` xyxy normalised by img_shape."""
        weight = self.label_embedding.weight
        labels, boxes = [], []
        for sample in batch_data_samples:
            if 'img_shape' not in sample.metainfo:
                raise KeyError('CdnQueryGenerator needs metainfo img_shape (h, w) in every data '
                               'sample; the data preprocessor / PackDetInputs set it.')
            img_h, img_w = sample.metainfo['img_shape'][:2]
            gt: InstanceData = sample.gt_instances
            scale = weight.new_tensor([img_w, img_h, img_w, img_h])
            boxes.append(gt.bboxes.to(weight).reshape(-1, 4) / scale)
            labels.append(gt.labels.to(device=weight.device, dtype=torch.long))
        flat = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
        # a class id >= num_classes would fail later inside nn.Embedding with a cryptic error
        if flat.numel() and not flat.is_meta and (flat.min() < 0 or flat.max() >= self.num_classes):
            raise ValueError(f'GT labels must lie in [0, {self.num_classes}) but range '
                             f'{int(flat.min())}..{int(flat.max())}; check num_classes and the '
                             f"dataset's classes in the config.")
        return labels, boxes

    def add_label_noise(self, labels: Tensor, num_groups: int) -> Tensor:
        """``(N,)`` labels -> ``(2 * num_groups * N,)``, each replaced by a random class with
        probability ``label_noise_scale * 0.5`` (the random class may equal the original)."""
        expanded = labels.repeat(2 * num_groups)
        replace = torch.rand(expanded.shape, device=labels.device) < \
            self.label_noise_scale * LABEL_NOISE_FACTOR
        random_labels = torch.randint_like(expanded, 0, self.num_classes)
        return torch.where(replace, random_labels, expanded)

    def add_box_noise(self, boxes: Tensor, num_groups: int) -> Tensor:
        """``(N, 4)`` normalised xyxy -> ``(2 * num_groups * N, 4)`` noisy xyxy in [0, 1].

        Chunks alternate positive / negative copies (see ``dn_query_layout``). Each corner
        coordinate moves by ``u * box_noise_scale * (w or h) / 2`` with a random sign and
        ``|u|`` in [0, 1) for positives, [1, 2) for negatives; the result is clamped to [0, 1].
        """
        expanded = boxes.repeat(2 * num_groups, 1)  # (2G * N, 4)
        negative = torch.arange(2 * num_groups, device=boxes.device).repeat_interleave(
            len(boxes)) % 2  # (2G * N,) 1 for negative copies
        magnitude = torch.rand_like(expanded) + negative[:, None].to(expanded)
        sign = torch.randint_like(expanded, 0, 2) * 2 - 1
        half_wh = bbox_xyxy_to_cxcywh(expanded)[:, 2:].repeat(1, 2) / 2  # (w, h, w, h) / 2
        noisy = expanded + sign * magnitude * half_wh * self.box_noise_scale
        return noisy.clamp(0.0, 1.0)

    def generate_dn_mask(self, max_num_target: int, num_groups: int,
                         device: torch.device) -> Tensor:
        """``(num_dn + num_matching,)*2`` bool mask, True where row may NOT attend to column.

        Matching queries do not see denoising queries (they would read the answers); each
        denoising group sees only itself and the matching queries.
        """
        num_dn = 2 * max_num_target * num_groups
        total = num_dn + self.num_matching_queries
        attn_mask = torch.zeros(total, total, dtype=torch.bool, device=device)
        attn_mask[num_dn:, :num_dn] = True
        group = torch.arange(num_dn, device=device) // max(2 * max_num_target, 1)
        attn_mask[:num_dn, :num_dn] = group[:, None] != group[None, :]
        return attn_mask
