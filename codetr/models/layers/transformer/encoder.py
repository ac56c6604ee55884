"""Deformable-DETR encoder with optional activation checkpointing."""
from __future__ import annotations

import copy

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from codetr.registry import MODELS

from .layers import DeformableDetrTransformerEncoderLayer, init_detr_weights
from .utils import get_reference_points

CHECKPOINT_IMPLS = ('torch', 'fairscale')


def _fairscale_wrap(layer: nn.Module) -> nn.Module:
    try:
        from fairscale.nn.checkpoint import checkpoint_wrapper
    except ImportError as err:
        raise ImportError("cp_impl='fairscale' needs fairscale (pip install fairscale); "
                          "or set cp_impl='torch' to use torch.utils.checkpoint") from err
    return checkpoint_wrapper(layer)


@MODELS.register_module()
class DeformableDetrTransformerEncoder(BaseModule):
    """A stack of deformable encoder layers over the flattened feature pyramid.

    Args:
        num_layers: number of layers (6 in Deformable-DETR, DINO, Co-DETR).
        layer_cfg: kwargs of :class:`DeformableDetrTransformerEncoderLayer`.
        num_cp: how many of the first layers recompute their activations in the backward pass
            instead of storing them (Co-DINO R50 uses 4, Swin-L 6; the official configs call it
            ``with_cp``). Only active when training with gradients enabled.
        cp_impl: ``'torch'`` (``torch.utils.checkpoint``, non-reentrant) or ``'fairscale'``
            (``fairscale``'s ``checkpoint_wrapper``, as the official code; needs fairscale).
        init_cfg: mmengine initialisation config.
    """

    def __init__(self, num_layers: int, layer_cfg: dict, num_cp: int = 0,
                 cp_impl: str = 'torch', init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not 0 <= num_cp <= num_layers:
            raise ValueError(f'num_cp={num_cp} must lie in [0, num_layers={num_layers}]')
        if cp_impl not in CHECKPOINT_IMPLS:
            raise ValueError(f'cp_impl={cp_impl!r} must be one of {CHECKPOINT_IMPLS}')
        self.num_cp = num_cp
        self.cp_impl = cp_impl
        self.layers = nn.ModuleList([
            DeformableDetrTransformerEncoderLayer(**copy.deepcopy(layer_cfg))
            for _ in range(num_layers)])
        self.embed_dims = self.layers[0].embed_dims
        if cp_impl == 'fairscale':
            for i in range(num_cp):
                self.layers[i] = _fairscale_wrap(self.layers[i])

    def init_weights(self) -> None:
        """Xavier weights, then the deformable attention's own initialisation."""
        init_detr_weights(self)

    def forward(self, query: Tensor, query_pos: Tensor, key_padding_mask: Tensor | None,
                spatial_shapes: Tensor, level_start_index: Tensor,
                valid_ratios: Tensor) -> Tensor:
        """Encode the flattened pyramid.

        Args:
            query: (B, S, C) flattened multi-level features, ``S = sum(h * w)``.
            query_pos: (B, S, C) positional + level embeddings.
            key_padding_mask: (B, S) bool, True on padding, or None.
            spatial_shapes: (L, 2) long ``(h, w)`` per level.
            level_start_index: (L,) long offset of each level in S.
            valid_ratios: (B, L, 2) ``(w, h)`` valid ratios per level.

        Returns:
            memory: (B, S, C).
        """
        reference_points = get_reference_points(spatial_shapes, valid_ratios)  # [B, S, L, 2]
        # Recomputation only pays off when a backward pass will follow.
        use_torch_cp = self.cp_impl == 'torch' and self.training and torch.is_grad_enabled()
        for i, layer in enumerate(self.layers):
            args = (query, query_pos, key_padding_mask, reference_points, spatial_shapes,
                    level_start_index)
            if use_torch_cp and i < self.num_cp:
                query = checkpoint(layer, *args, use_reentrant=False)
            else:
                query = layer(*args)
        return query
