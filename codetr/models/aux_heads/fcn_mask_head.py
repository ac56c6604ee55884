"""Mask branch of the Mask R-CNN aux head: MMDetection's ``FCNMaskHead`` (He et al., 2017).

RoI features ``(K, C, 14, 14)`` -> ``num_convs`` 3x3 convs with ReLU -> a stride-2 2x2
deconvolution with ReLU -> a 1x1 conv to one ``28 x 28`` logit map per class. Parameter
names are MMDetection's (``convs.i.conv``, ``upsample``, ``conv_logits``).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from codetr.models.utils import float32_inputs
from codetr.registry import MODELS
from codetr.structures.mask import BitmapMasks, PolygonMasks

from .mask_paste import paste_masks


class ConvReLU(nn.Module):
    """``conv`` + ReLU, named like mmcv's ``ConvModule`` (``convs.i.conv.weight``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size,
                              padding=(kernel_size - 1) // 2)
        # ConvModule's initialisation: Kaiming normal (fan_out, ReLU), zero bias
        nn.init.kaiming_normal_(self.conv.weight, mode='fan_out', nonlinearity='relu')
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.conv(x))


def mask_targets(pos_rois: list[Tensor], pos_gt_inds: list[Tensor],
                 gt_masks: list[BitmapMasks | PolygonMasks], mask_size: int) -> Tensor:
    """Binary ``(P, mask_size, mask_size)`` float targets of the positive RoIs of a batch.

    Args:
        pos_rois: per image ``(P_i, 4)`` xyxy positive RoIs (input pixels).
        pos_gt_inds: per image ``(P_i,)`` index of each RoI's GT instance.
        gt_masks: per image the GT masks (in input pixels, any padding at bottom / right).
        mask_size: side of the targets (28).

    Each GT mask is cut to its RoI and resized (RoIAlign, then >= 0.5), as MMDetection's
    ``mask_target`` does.
    """
    targets = []
    for rois, inds, masks in zip(pos_rois, pos_gt_inds, gt_masks):
        if len(rois) == 0:
            continue
        cut = masks.crop_and_resize(rois.detach(), (mask_size, mask_size), inds,
                                    device=rois.device)
        targets.append(cut.to_tensor(torch.float32, rois.device))
    if not targets:
        device = pos_rois[0].device if pos_rois else 'cpu'
        return torch.zeros(0, mask_size, mask_size, device=device)
    return torch.cat(targets)


class FCNMaskHead(nn.Module):
    """Per-class mask logits of RoIs.

    Args:
        num_classes: object classes (one logit map each; 1 when ``class_agnostic``).
        in_channels: channels C of the RoI features.
        conv_out_channels: width of the convs and the deconvolution.
        num_convs: 3x3 convs before the upsampling (4 in Mask R-CNN).
        conv_kernel_size: kernel of those convs.
        roi_feat_size: side of the pooled RoI features (14); the logits are twice that.
        class_agnostic: one mask per RoI instead of one per class.
        loss_mask: ``MODELS`` config of the mask loss: ``CrossEntropyLoss(use_mask=True)``.
    """

    def __init__(self, num_classes: int, in_channels: int = 256, conv_out_channels: int = 256,
                 num_convs: int = 4, conv_kernel_size: int = 3, roi_feat_size: int = 14,
                 class_agnostic: bool = False, loss_mask: dict | None = None) -> None:
        super().__init__()
        loss_mask = loss_mask or dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0)
        if not loss_mask.get('use_mask', False):
            raise ValueError('mask_head.loss_mask must be a mask loss: '
                             "dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0)")
        self.num_classes = num_classes
        self.class_agnostic = class_agnostic
        self.roi_feat_size = roi_feat_size
        self.convs = nn.ModuleList(
            ConvReLU(in_channels if i == 0 else conv_out_channels, conv_out_channels,
                     conv_kernel_size) for i in range(num_convs))
        last = conv_out_channels if num_convs else in_channels
        self.upsample = nn.ConvTranspose2d(last, conv_out_channels, 2, stride=2)
        self.conv_logits = nn.Conv2d(conv_out_channels, 1 if class_agnostic else num_classes, 1)
        for layer in (self.upsample, self.conv_logits):  # FCNMaskHead.init_weights
            nn.init.kaiming_normal_(layer.weight, mode='fan_out', nonlinearity='relu')
            nn.init.zeros_(layer.bias)
        self.loss_mask = MODELS.build(loss_mask)

    @property
    def mask_size(self) -> int:
        """Side of the predicted logit maps (twice ``roi_feat_size``)."""
        return 2 * self.roi_feat_size

    def forward(self, roi_feats: Tensor) -> Tensor:
        """``(K, C, S, S)`` -> ``(K, num_classes or 1, 2S, 2S)`` mask logits."""
        x = roi_feats
        for conv in self.convs:
            x = conv(x)
        return self.conv_logits(torch.relu(self.upsample(x)))

    def _channel(self, labels: Tensor) -> Tensor:
        return torch.zeros_like(labels) if self.class_agnostic else labels

    @float32_inputs
    def loss(self, mask_logits: Tensor, targets: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """``loss_mask``: BCE of each positive RoI's class channel against its target,
        averaged over every pixel of every RoI; zero (in the graph) without positives.

        Args:
            mask_logits: ``(P, num_classes, M, M)``.
            targets: ``(P, M, M)`` binary.
            labels: ``(P,)`` class of each RoI.
        """
        if len(mask_logits) == 0:
            return dict(loss_mask=mask_logits.sum() * 0)
        loss = self.loss_mask(mask_logits, targets, self._channel(labels))
        return dict(loss_mask=loss.mean())

    @float32_inputs
    def predict(self, mask_logits: Tensor, boxes: Tensor, labels: Tensor,
                out_shape: tuple[int, int], threshold: float = 0.5) -> Tensor:
        """``(D, H, W)`` bool masks: each box's class channel, sigmoid, pasted into an image
        of ``out_shape = (H, W)`` pixels (``boxes (D, 4)`` xyxy in those pixels)."""
        if len(boxes) == 0:
            return torch.zeros(0, *out_shape, dtype=torch.bool, device=boxes.device)
        rows = torch.arange(len(labels), device=labels.device)
        probs = mask_logits[rows, self._channel(labels).long()].sigmoid()
        return paste_masks(probs, boxes, out_shape, threshold)
