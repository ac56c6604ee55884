"""CoFCOSHead: FCOS (Tian et al., ICCV 2019) as a Co-DETR auxiliary head.

The head follows MMDetection's ``FCOSHead`` (centre sampling, per-level regress ranges,
centerness on the regression branch, distances normalised by the stride) with Co-DETR's aux
settings: one stacked conv, GIoU on decoded boxes, and the pyramid of the multi-scale
adapter as input. Its positives (paper Table 1) are boxes centred at the positive points,
of side ``POS_BOX_SCALE * stride``, handed to the query head through
:func:`~codetr.models.co_modules.select_positives`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from mmcv.cnn import ConvModule, Scale
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor, nn

from codetr.models.co_modules import AuxPositives, select_positives
from codetr.models.layers.nms import batched_nms
from codetr.models.query_heads.detr_criterion import mean_over_ranks
from codetr.models.query_heads.postprocess import _scale_factor
from codetr.models.utils import float32_inputs, to_float32
from codetr.registry import MODELS
from codetr.structures import DetDataSample

INF = 1e8
# Upper bound of level l's regress range = REGRESS_RANGE_SCALE * stride_l: MMDetection's FCOS
# ranges (-1, 64), (64, 128), (128, 256), (256, 512), (512, INF) for strides 8..128 follow it.
REGRESS_RANGE_SCALE = 8
# Side of the box handed on per positive point: paper Table 1 gives w = h = 8 * 2^(2+j) at
# level j, i.e. 8 * stride for the 5-scale pyramid (stride_j = 2^(2+j)), the same size as an
# ATSS anchor (octave_base_scale 8). codetr ties it to the stride so 4-level models
# (strides 8..128) hand on the same box per stride.
POS_BOX_SCALE = 8
# Points sit at the centre of their feature cell (MMDetection 3.x's point generator offset).
POINT_OFFSET = 0.5
# FCOS's initialisation: normal(0, 0.01) convs, classification bias for a 0.01 prior.
FCOS_INIT_CFG = dict(type='Normal', layer='Conv2d', std=0.01, override=dict(
    type='Normal', name='conv_cls', std=0.01, bias_prob=0.01))
# Test settings of the aux one-stage heads in the official Co-DETR configs.
DEFAULT_TEST_CFG = dict(nms_pre=1000, score_thr=0.05, max_per_img=100,
                        nms=dict(type='nms', iou_threshold=0.6))


def default_regress_ranges(strides: Sequence[int]) -> tuple[tuple[float, float], ...]:
    """Per-level ``(min, max)`` box-distance ranges in pixels, ``8 * stride`` apart."""
    bounds = [-1.0] + [float(REGRESS_RANGE_SCALE * s) for s in strides[:-1]] + [INF]
    return tuple(zip(bounds[:-1], bounds[1:]))


def level_points(height: int, width: int, stride: int, like: Tensor) -> Tensor:
    """``(H * W, 2)`` ``(x, y)`` pixel centres of a level's cells, row-major."""
    ys = (torch.arange(height, device=like.device, dtype=like.dtype) + POINT_OFFSET) * stride
    xs = (torch.arange(width, device=like.device, dtype=like.dtype) + POINT_OFFSET) * stride
    yy, xx = torch.meshgrid(ys, xs, indexing='ij')
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)


def distance_to_bbox(points: Tensor, distances: Tensor) -> Tensor:
    """``(N, 2)`` points and ``(N, 4)`` ``(left, top, right, bottom)`` -> ``(N, 4)`` xyxy."""
    return torch.cat([points - distances[:, :2], points + distances[:, 2:]], dim=-1)


def centerness_target(ltrb: Tensor) -> Tensor:
    """FCOS centerness ``sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b))`` of ``(N, 4)``."""
    lr, tb = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
    ratio = (lr.min(-1).values / lr.max(-1).values) * (tb.min(-1).values / tb.max(-1).values)
    return ratio.clamp(min=0).sqrt()


def fcos_targets(points: Tensor, regress_ranges: Tensor, point_strides: Tensor,
                 gt_bboxes: Tensor, gt_labels: Tensor, num_classes: int,
                 center_sample_radius: float | None) -> tuple[Tensor, Tensor]:
    """FCOS assignment of one image's points.

    A point is a candidate for a GT box when it lies inside the box (or, with centre
    sampling, inside the box's centre region of half-side ``radius * stride``, clipped to the
    box) and its largest distance to the box sides lies in its level's regress range; among
    candidates the GT of smallest area wins.

    Args:
        points: ``(P, 2)`` xy pixels of all levels.
        regress_ranges: ``(P, 2)`` range of each point's level, pixels.
        point_strides: ``(P,)`` stride of each point's level, pixels.
        gt_bboxes: ``(G, 4)`` xyxy pixels.
        gt_labels: ``(G,)`` long.
        num_classes: the background label.
        center_sample_radius: radius in strides, or ``None`` to use the whole box.

    Returns:
        labels ``(P,)`` long (``num_classes`` = background) and ltrb distances ``(P, 4)``
        pixels to the assigned GT (meaningless for background points).
    """
    num_points = points.size(0)
    if gt_bboxes.size(0) == 0:
        return (gt_labels.new_full((num_points,), num_classes), points.new_zeros(num_points, 4))
    gts = gt_bboxes[None]  # [1, G, 4]
    x, y = points[:, 0, None], points[:, 1, None]  # [P, 1]
    ltrb = torch.stack([x - gts[..., 0], y - gts[..., 1], gts[..., 2] - x, gts[..., 3] - y], -1)
    if center_sample_radius is None:
        inside = ltrb.min(-1).values > 0
    else:
        centre = (gts[..., :2] + gts[..., 2:]) / 2  # [1, G, 2]
        half = point_strides[:, None, None] * center_sample_radius  # [P, 1, 1]
        region = torch.cat([torch.maximum(centre - half, gts[..., :2]),
                            torch.minimum(centre + half, gts[..., 2:])], -1)  # [P, G, 4]
        inside = torch.stack([x - region[..., 0], y - region[..., 1],
                              region[..., 2] - x, region[..., 3] - y], -1).min(-1).values > 0
    reach = ltrb.max(-1).values  # [P, G]
    in_range = (reach >= regress_ranges[:, :1]) & (reach <= regress_ranges[:, 1:])
    areas = ((gt_bboxes[:, 2] - gt_bboxes[:, 0]) * (gt_bboxes[:, 3] - gt_bboxes[:, 1]))
    areas = areas[None].expand(num_points, -1).clone()
    areas[~(inside & in_range)] = INF
    min_area, gt_index = areas.min(dim=1)
    labels = gt_labels[gt_index].clone()
    labels[min_area == INF] = num_classes
    return labels, ltrb[torch.arange(num_points, device=points.device), gt_index]


@MODELS.register_module()
class CoFCOSHead(BaseModule):
    """FCOS auxiliary head on the adapter's pyramid.

    Args:
        num_classes: number of object classes (background = ``num_classes``).
        in_channels: channels of every pyramid level.
        feat_channels: channels of the stacked convs.
        stacked_convs: convs per branch; Co-DETR's aux heads use 1.
        strides: stride of each pyramid level, pixels (4..128 for 5-scale Co-DINO, 8..128 for
            Co-Deformable-DETR).
        regress_ranges: per-level ``(min, max)`` pixel ranges; ``None`` derives them from the
            strides (MMDetection's FCOS ranges for strides 8..128).
        center_sampling: assign only points in the GT centre region.
        center_sample_radius: half-side of that region, in strides.
        norm_on_bbox: regress distances in stride units through a ReLU (else ``exp``).
        centerness_on_reg: predict centerness from the regression branch.
        pos_box_scale: side of the boxes handed on, in strides (paper Table 1).
        max_pos_coords: most positives handed on per image.
        loss_cls, loss_bbox, loss_centerness: loss configs (weights before lambda_2 and the
            decoder-layer fold).
        norm_cfg: normalisation of the stacked convs.
        train_cfg: unused; accepted for the detector's per-branch contract.
        test_cfg: ``nms_pre``, ``score_thr``, ``nms``, ``max_per_img``.
        init_cfg: mmengine init config; ``None`` is FCOS's (``FCOS_INIT_CFG``).
    """

    # CoDETR evaluates through this head when test_cfg.eval_module == 'one-stage'.
    eval_kind = 'one-stage'

    def __init__(self, num_classes: int, in_channels: int = 256, feat_channels: int = 256,
                 stacked_convs: int = 1, strides: Sequence[int] = (4, 8, 16, 32, 64, 128),
                 regress_ranges: Sequence[Sequence[float]] | None = None,
                 center_sampling: bool = True, center_sample_radius: float = 1.5,
                 norm_on_bbox: bool = True, centerness_on_reg: bool = True,
                 pos_box_scale: float = POS_BOX_SCALE, max_pos_coords: int = 300,
                 loss_cls: dict | None = None, loss_bbox: dict | None = None,
                 loss_centerness: dict | None = None, norm_cfg: dict | None = None,
                 train_cfg: dict | None = None, test_cfg: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg or FCOS_INIT_CFG)
        self.num_classes = num_classes
        self.strides = tuple(int(s) for s in strides)
        ranges = default_regress_ranges(self.strides) if regress_ranges is None else regress_ranges
        if len(ranges) != len(self.strides):
            raise ValueError(f'regress_ranges has {len(ranges)} levels but strides '
                             f'{self.strides} has {len(self.strides)}; give one range per '
                             'level or None to derive them')
        self.regress_ranges = tuple((float(lo), float(hi)) for lo, hi in ranges)
        self.center_sample_radius = center_sample_radius if center_sampling else None
        self.norm_on_bbox = norm_on_bbox
        self.centerness_on_reg = centerness_on_reg
        self.pos_box_scale = pos_box_scale
        self.max_pos_coords = max_pos_coords
        self.train_cfg = train_cfg
        self.test_cfg = {**DEFAULT_TEST_CFG, **(test_cfg or {})}
        self.loss_cls = MODELS.build(loss_cls or dict(
            type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0))
        self.loss_bbox = MODELS.build(loss_bbox or dict(type='GIoULoss', loss_weight=2.0))
        self.loss_centerness = MODELS.build(loss_centerness or dict(
            type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0))
        norm_cfg = norm_cfg or dict(type='GN', num_groups=32, requires_grad=True)

        def tower() -> nn.Sequential:
            return nn.Sequential(*[
                ConvModule(in_channels if i == 0 else feat_channels, feat_channels, 3,
                           padding=1, norm_cfg=norm_cfg) for i in range(stacked_convs)])

        self.cls_convs, self.reg_convs = tower(), tower()
        self.conv_cls = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        self.conv_reg = nn.Conv2d(feat_channels, 4, 3, padding=1)
        self.conv_centerness = nn.Conv2d(feat_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList([Scale(1.0) for _ in self.strides])

    def forward(self, pyramid: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Raw outputs per level.

        Returns:
            cls logits ``(B, num_classes, H_l, W_l)``, ltrb distances ``(B, 4, H_l, W_l)`` in
            pixels (>= 0), centerness logits ``(B, 1, H_l, W_l)``.
        """
        if len(pyramid) != len(self.strides):
            raise ValueError(f'CoFCOSHead got {len(pyramid)} pyramid levels but has strides '
                             f'{self.strides}; set its strides to the adapter\'s levels')
        outs = [self._forward_level(feat, scale, stride)
                for feat, scale, stride in zip(pyramid, self.scales, self.strides)]
        return tuple(list(level) for level in zip(*outs))

    def _forward_level(self, feat: Tensor, scale: Scale,
                       stride: int) -> tuple[Tensor, Tensor, Tensor]:
        cls_feat, reg_feat = self.cls_convs(feat), self.reg_convs(feat)
        distances = scale(self.conv_reg(reg_feat)).float()
        if self.norm_on_bbox:
            # Regressed in stride units; pixels are used everywhere else (GIoU is invariant to
            # the common scale, so the loss equals MMDetection's stride-unit one).
            distances = distances.clamp(min=0) * stride
        else:
            distances = distances.exp()
        centerness = self.conv_centerness(reg_feat if self.centerness_on_reg else cls_feat)
        return self.conv_cls(cls_feat), distances, centerness

    def _points(self, pyramid: list[Tensor]) -> tuple[Tensor, Tensor, Tensor, list[int]]:
        """All levels' points ``(P, 2)``, their ranges ``(P, 2)``, strides ``(P,)``, counts."""
        like = pyramid[0].new_zeros(())
        points, ranges, strides, counts = [], [], [], []
        for feat, stride, rng in zip(pyramid, self.strides, self.regress_ranges):
            pts = level_points(feat.shape[-2], feat.shape[-1], stride, like.float())
            points.append(pts)
            ranges.append(pts.new_tensor(rng).expand(len(pts), 2))
            strides.append(pts.new_full((len(pts),), float(stride)))
            counts.append(len(pts))
        return torch.cat(points), torch.cat(ranges), torch.cat(strides), counts

    def loss(self, pyramid: list[Tensor],
             data_samples: list[DetDataSample]) -> tuple[dict[str, Tensor], AuxPositives]:
        """FCOS losses and the positives handed to the query head.

        Args:
            pyramid: the adapter's levels, ``(B, C, H_l, W_l)`` with the head's strides.
            data_samples: ``gt_instances.bboxes (G, 4)`` xyxy network-input pixels, ``labels``.

        Returns:
            ``loss_cls``, ``loss_bbox``, ``loss_centerness`` (the head's own weights), and
            :class:`AuxPositives` whose coords are ``pos_box_scale * stride`` squares centred
            at the positive points, targets the assigned GT boxes, feats the pyramid feature
            at each point.
        """
        # float32 from here on: targets and losses never run in autocast's bf16
        cls_scores, distances, centernesses = to_float32(self(pyramid))
        points, ranges, strides, _ = self._points(pyramid)
        labels, ltrb = [], []
        for sample in data_samples:
            gt = sample.gt_instances
            lab, dist = fcos_targets(points, ranges, strides, gt.bboxes.to(points),
                                     gt.labels.to(points.device).long(), self.num_classes,
                                     self.center_sample_radius)
            labels.append(lab)
            ltrb.append(dist)
        labels, ltrb = torch.stack(labels), torch.stack(ltrb)  # [B, P], [B, P, 4]
        losses = self._losses(_flatten(cls_scores), _flatten(distances),
                              _flatten(centernesses)[..., 0], labels, ltrb, points)
        return losses, self._positives(pyramid, points, strides, labels, ltrb)

    @float32_inputs
    def _losses(self, cls_scores: Tensor, distances: Tensor, centerness: Tensor,
                labels: Tensor, ltrb: Tensor, points: Tensor) -> dict[str, Tensor]:
        """MMDetection's FCOS losses over the batch's ``(B, P, .)`` predictions / targets."""
        batch = cls_scores.size(0)
        flat_labels = labels.reshape(-1)
        pos = ((flat_labels >= 0) & (flat_labels < self.num_classes)).nonzero().squeeze(1)
        num_pos = max(mean_over_ranks(len(pos), cls_scores), 1.0)
        loss_cls = self.loss_cls(cls_scores.reshape(-1, self.num_classes), flat_labels,
                                 avg_factor=num_pos)
        pos_points = points.repeat(batch, 1)[pos]
        pos_pred = distances.reshape(-1, 4)[pos]
        pos_target = ltrb.reshape(-1, 4)[pos]
        pos_centerness = centerness.reshape(-1)[pos]
        centerness_targets = centerness_target(pos_target)
        # Every rank joins the all-reduce, positives or not.
        denorm = max(mean_over_ranks(float(centerness_targets.sum()), cls_scores), 1e-6)
        if len(pos) == 0:
            # Zero losses that still reach every parameter of the branch.
            return dict(loss_cls=loss_cls, loss_bbox=pos_pred.sum(),
                        loss_centerness=pos_centerness.sum())
        loss_bbox = self.loss_bbox(distance_to_bbox(pos_points, pos_pred),
                                   distance_to_bbox(pos_points, pos_target),
                                   weight=centerness_targets, avg_factor=denorm)
        loss_centerness = self.loss_centerness(pos_centerness, centerness_targets,
                                               avg_factor=num_pos)
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox, loss_centerness=loss_centerness)

    def _positives(self, pyramid: list[Tensor], points: Tensor, strides: Tensor,
                   labels: Tensor, ltrb: Tensor) -> AuxPositives:
        """Point boxes, labels, GT boxes and features of every point, through the
        official selection rule (positives first, padded with this head's negatives)."""
        half = (strides * self.pos_box_scale / 2)[:, None]  # [P, 1]
        coords = torch.cat([points - half, points + half], dim=-1)  # [P, 4]
        feats = torch.cat([level.flatten(2) for level in pyramid], dim=2).transpose(1, 2)
        return select_positives(
            coords=[coords] * len(labels), labels=list(labels),
            targets=[distance_to_bbox(points, dist) for dist in ltrb],
            num_classes=self.num_classes, feats=list(feats), max_pos_coords=self.max_pos_coords)

    @torch.no_grad()
    def predict(self, pyramid: list[Tensor], data_samples: list[DetDataSample],
                rescale: bool = True) -> list[InstanceData]:
        """Detections per image (MMDetection's FCOS test: per-level score threshold and
        top ``nms_pre``, scores times centerness, class-wise NMS, top ``max_per_img``).

        Returns:
            ``InstanceData`` with ``bboxes (K, 4)`` xyxy (original image pixels when
            ``rescale``, else network input pixels), ``scores (K,)``, ``labels (K,)``.
        """
        cls_scores, distances, centernesses = to_float32(self(pyramid))
        points, _, _, counts = self._points(pyramid)
        points = points.split(counts)
        results = []
        for b, sample in enumerate(data_samples):
            levels = [(cls[b], dist[b], ctr[b], pts) for cls, dist, ctr, pts in
                      zip(cls_scores, distances, centernesses, points)]
            results.append(self._predict_image(levels, sample.metainfo, rescale))
        return results

    @float32_inputs
    def _predict_image(self, levels: list[tuple[Tensor, Tensor, Tensor, Tensor]],
                       meta: dict, rescale: bool) -> InstanceData:
        """One image: ``levels`` of (cls (C, H, W), ltrb (4, H, W), ctr (1, H, W), points)."""
        cfg = self.test_cfg
        boxes, scores, labels, factors = [], [], [], []
        for cls, dist, ctr, pts in levels:
            probs = cls.flatten(1).t().sigmoid()  # [HW, C]
            candidates = (probs > cfg['score_thr']).nonzero()  # [K, 2] (point, class)
            level_scores = probs[candidates[:, 0], candidates[:, 1]]
            level_scores, order = level_scores.sort(descending=True)
            top = candidates[order[:cfg['nms_pre']]]
            keep, cls_ids = top[:, 0], top[:, 1]
            boxes.append(distance_to_bbox(pts[keep], dist.flatten(1).t()[keep]))
            scores.append(level_scores[:cfg['nms_pre']])
            labels.append(cls_ids)
            factors.append(ctr.flatten().sigmoid()[keep])
        boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
        img_h, img_w = meta['img_shape'][:2]
        boxes = boxes.clamp(min=0).minimum(boxes.new_tensor([img_w, img_h, img_w, img_h]))
        if rescale:
            factor = _scale_factor(meta)
            boxes = boxes / boxes.new_tensor(factor * 2)
        scores = scores * torch.cat(factors)
        if boxes.numel() > 0:
            dets, keep = batched_nms(boxes, scores, labels, cfg['nms'])
            boxes, scores, labels = boxes[keep], dets[:, -1], labels[keep]
        top = slice(0, cfg['max_per_img'])
        return InstanceData(bboxes=boxes[top], scores=scores[top], labels=labels[top])


def _flatten(levels: list[Tensor]) -> Tensor:
    """Per-level ``(B, K, H_l, W_l)`` -> ``(B, P, K)`` with ``P = sum H_l * W_l``."""
    return torch.cat([level.flatten(2) for level in levels], dim=2).transpose(1, 2)

