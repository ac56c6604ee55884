"""RoI feature extraction from a pyramid: each RoI is pooled from the one level its size picks."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from codetr.models.layers.roi_align import multi_level_roi_align
from codetr.registry import MODELS
from codetr.structures import bbox_rescale


class RoIAlign(nn.Module):
    """torchvision's RoIAlign with mmcv's ``RoIAlign`` arguments and defaults (computed by
    :func:`multi_level_roi_align`: fused kernels on a CPU, torchvision elsewhere).

    Args:
        output_size: ``s`` or ``(h, w)`` bins.
        spatial_scale: feature pixels per image pixel (``1 / stride``).
        sampling_ratio: sample points per bin side; 0 = adaptive (``ceil(bin size)``).
        pool_mode: only ``'avg'`` (mmcv's default) is supported.
        aligned: shift boxes by -0.5 px so that pixel centres sit at half-integers (mmcv's
            default, and the Co-DETR configs keep it).
        use_torchvision: accepted for mmcv configs; ignored.
    """

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float = 1.,
                 sampling_ratio: int = 0, pool_mode: str = 'avg', aligned: bool = True,
                 use_torchvision: bool = True) -> None:
        super().__init__()
        if pool_mode != 'avg':
            raise ValueError(f"RoIAlign supports pool_mode='avg' only, got {pool_mode!r}")
        self.output_size = ((output_size, output_size) if isinstance(output_size, int)
                            else tuple(output_size))
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, feats: Tensor, rois: Tensor) -> Tensor:
        """``(B, C, H, W)`` features, ``(K, 5)`` ``[batch_idx, x1, y1, x2, y2]`` image pixels
        -> ``(K, C, h, w)``."""
        return multi_level_roi_align([feats], rois, rois.new_zeros(len(rois), dtype=torch.long),
                                     self.output_size, [self.spatial_scale],
                                     self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (f'output_size={self.output_size}, spatial_scale={self.spatial_scale}, '
                f'sampling_ratio={self.sampling_ratio}, aligned={self.aligned}')


ROI_LAYERS = {'RoIAlign': RoIAlign}


@MODELS.register_module()
class SingleRoIExtractor(BaseModule):
    """Pool a fixed-size feature for every RoI from the level that matches its scale.

    An RoI of scale ``sqrt(w * h)`` goes to level ``floor(log2(scale / finest_scale +
    1e-6))`` clamped to ``[0, L - 1]`` (FPN's rule): below ``2 * finest_scale`` the finest
    level, then one level per doubling.

    Args:
        roi_layer: config of the pooling layer, e.g. ``dict(type='RoIAlign', output_size=7,
            sampling_ratio=0)``; its ``spatial_scale`` is set per level.
        out_channels: channels of the features.
        featmap_strides: strides of the levels used, finest first; the extractor uses the
            first ``len(featmap_strides)`` levels it is given.
        finest_scale: RoI scale (pixels) at which mapping moves past level 0.
        init_cfg: mmengine initialisation config.
    """

    def __init__(self, roi_layer: dict, out_channels: int, featmap_strides: Sequence[int],
                 finest_scale: int = 56, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        layer_cfg = dict(roi_layer)
        layer_type = layer_cfg.pop('type', 'RoIAlign')
        if layer_type not in ROI_LAYERS:
            raise ValueError(f'unknown roi_layer type {layer_type!r}; available: '
                             f'{sorted(ROI_LAYERS)}')
        self.roi_layers = nn.ModuleList(
            ROI_LAYERS[layer_type](spatial_scale=1 / s, **layer_cfg) for s in featmap_strides)
        self.out_channels = out_channels
        self.featmap_strides = list(featmap_strides)
        self.finest_scale = finest_scale

    @property
    def num_inputs(self) -> int:
        """Number of pyramid levels the extractor pools from."""
        return len(self.featmap_strides)

    def map_roi_levels(self, rois: Tensor, num_levels: int) -> Tensor:
        """``(K, 5)`` RoIs -> ``(K,)`` long level index in ``[0, num_levels - 1]``."""
        scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
        levels = torch.floor(torch.log2(scale / self.finest_scale + 1e-6))
        return levels.clamp(min=0, max=num_levels - 1).long()

    def forward(self, feats: Sequence[Tensor], rois: Tensor,
                roi_scale_factor: float | None = None) -> Tensor:
        """Pool RoI features.

        Args:
            feats: pyramid levels ``(B, C, H_l, W_l)``, finest first; at least
                :attr:`num_inputs` of them (extra coarser levels are not used).
            rois: ``(K, 5)`` ``[batch_idx, x1, y1, x2, y2]`` in image pixels.
            roi_scale_factor: if given, scale the RoIs about their centres after choosing
                their level.

        Returns:
            ``(K, C, h, w)`` with ``(h, w)`` the roi layer's output size.
        """
        if len(feats) < self.num_inputs:
            raise ValueError(f'SingleRoIExtractor has {self.num_inputs} featmap_strides but got '
                             f'{len(feats)} feature levels')
        feats = feats[:self.num_inputs]
        levels = self.map_roi_levels(rois, len(feats))
        if roi_scale_factor is not None:
            rois = torch.cat([rois[:, :1], bbox_rescale(rois[:, 1:], roi_scale_factor)], dim=1)
        # One call for all levels; every level gets a gradient, zero where it pooled no RoI
        # (distributed training must not find parameters without gradients).
        layer = self.roi_layers[0]
        return multi_level_roi_align(feats, rois, levels, layer.output_size,
                                     [m.spatial_scale for m in self.roi_layers],
                                     layer.sampling_ratio, layer.aligned)
