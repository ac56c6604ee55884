"""Sine positional encoding of padded feature maps (DETR)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from codetr.registry import MODELS


@MODELS.register_module()
class SinePositionalEncoding(nn.Module):
    """2-d sine / cosine encoding of pixel positions, counted over the unpadded image.

    Each pixel's position is the running count of non-padding pixels along a column (y) and
    a row (x), so padding does not shift the positions of real pixels. With ``normalize`` the
    counts are divided by the image's valid size: ``(count + offset) / (valid + eps) * scale``.

    Args:
        num_feats: features per axis (even); the output has ``2 * num_feats`` channels.
        temperature: base of the frequency ladder ``temperature ** (2 * (i // 2) / num_feats)``;
            Co-DINO uses 20, DETR 10000.
        normalize: divide the counts by the valid size (Co-DINO, Co-Deformable-DETR: True).
        scale: multiplier after normalising (2 * pi).
        eps: keeps the division finite for fully padded rows / columns.
        offset: added to the counts before normalising (Co-Deformable-DETR: -0.5, which moves
            the positions to pixel centres; Co-DINO: 0).
    """

    def __init__(self, num_feats: int = 128, temperature: float = 10000.0,
                 normalize: bool = False, scale: float = 2 * math.pi, eps: float = 1e-6,
                 offset: float = 0.0) -> None:
        super().__init__()
        if num_feats % 2 != 0:
            raise ValueError(f'num_feats must be even (sin/cos pairs), got {num_feats}')
        self.num_feats = num_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.eps = eps
        self.offset = offset

    def forward(self, mask: Tensor) -> Tensor:
        """Encode the positions of one padded batch.

        Args:
            mask: (B, H, W) bool, True on padding.

        Returns:
            (B, 2 * num_feats, H, W) float: channels ``[0, num_feats)`` encode y, the rest x.
        """
        not_mask = (~mask.bool()).float()
        y_embed = not_mask.cumsum(1)  # [B, H, W], 1-based row count
        x_embed = not_mask.cumsum(2)  # [B, H, W], 1-based column count
        if self.normalize:
            y_embed = (y_embed + self.offset) / (y_embed[:, -1:, :] + self.eps) * self.scale
            x_embed = (x_embed + self.offset) / (x_embed[:, :, -1:] + self.eps) * self.scale
        index = torch.arange(self.num_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * torch.div(index, 2, rounding_mode='floor')
                                     / self.num_feats)
        pos_x = x_embed[..., None] / dim_t  # [B, H, W, F]
        pos_y = y_embed[..., None] / dim_t
        # Interleave: channel 2k is sin, 2k + 1 is cos of the same frequency.
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=-1).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=-1).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (f'num_feats={self.num_feats}, temperature={self.temperature}, '
                f'normalize={self.normalize}, scale={self.scale}, eps={self.eps}, '
                f'offset={self.offset}')
