"""Pure tensor helpers shared by the deformable encoder, the decoders and the query heads.

All boxes here are normalised: ``cxcywh`` (or ``xy`` points) in [0, 1] relative to the padded
feature map unless a docstring says otherwise. ``spatial_shapes`` is always an ``(L, 2)`` long
tensor of per-level ``(h, w)`` and ``valid_ratios`` a ``(B, L, 2)`` tensor of per-level
``(w_valid / w, h_valid / h)``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# Level sizes as an (L, 2) long tensor, or as L ``(h, w)`` pairs of ints (symbolic sizes
# when an export traces the model: a tensor would be read back as data).
LevelShapes = Tensor | Sequence[Sequence[int]]

# Proposal box side at level 0 as a fraction of the image (Deformable-DETR two-stage); the
# side doubles with each coarser level.
PROPOSAL_BASE_SIZE = 0.05
# Proposals whose every coordinate lies strictly inside (0.01, 0.99) are kept
# (Deformable-DETR two-stage); the others sit on or over the image border.
PROPOSAL_VALID_RANGE = (0.01, 0.99)


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Logit of ``x`` after clamping to [0, 1]; ``eps`` keeps both log terms finite.

    Args:
        x: any shape, values meant to lie in [0, 1].
        eps: lower bound of ``x`` and ``1 - x`` inside the log (DINO's decoder uses 1e-3).

    Returns:
        ``log(x / (1 - x))``, same shape as ``x``.
    """
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def _sine_features(coord: Tensor, dim_t: Tensor, scale: float) -> Tensor:
    """(...,) coordinate -> (..., F) interleaved ``sin, cos`` features over ``dim_t`` (F,)."""
    pos = coord[..., None] * scale / dim_t
    # dim_t repeats each frequency twice, so even channels take sin and odd channels cos.
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


def coordinate_to_encoding(coord_tensor: Tensor, num_feats: int = 128,
                           temperature: float = 10000.0,
                           scale: float = 2 * math.pi) -> Tensor:
    """Sine embedding of normalised points or boxes, as used for DINO's ``query_pos``.

    Args:
        coord_tensor: (..., 2) normalised ``xy`` or (..., 4) normalised ``cxcywh``.
        num_feats: features per coordinate (even); ``embed_dims / 2`` in DINO.
        temperature: base of the frequency ladder ``temperature ** (2 * (i // 2) / num_feats)``.
        scale: multiplier applied to the coordinates before the frequencies (2 * pi).

    Returns:
        (..., 2 * num_feats) ordered ``[y, x]`` for points, or (..., 4 * num_feats) ordered
        ``[y, x, w, h]`` for boxes.
    """
    if coord_tensor.size(-1) not in (2, 4):
        raise ValueError('coordinate_to_encoding expects (..., 2) points or (..., 4) boxes, '
                         f'got last dimension {coord_tensor.size(-1)}')
    index = torch.arange(num_feats, dtype=torch.float32, device=coord_tensor.device)
    dim_t = temperature ** (2 * torch.div(index, 2, rounding_mode='floor') / num_feats)
    coords = coord_tensor.float()
    order = (1, 0) if coords.size(-1) == 2 else (1, 0, 2, 3)
    return torch.cat([_sine_features(coords[..., i], dim_t, scale) for i in order], dim=-1)


def get_valid_ratio(mask: Tensor) -> Tensor:
    """Fraction of each padded feature map that holds the image.

    Args:
        mask: (B, H, W) bool, True on padding (padding is at the bottom and right).

    Returns:
        (B, 2) float ``(valid_w / W, valid_h / H)``.
    """
    _, height, width = mask.shape
    valid_h = (~mask[:, :, 0]).sum(1).float()
    valid_w = (~mask[:, 0, :]).sum(1).float()
    return torch.stack([valid_w / width, valid_h / height], dim=-1)


def level_shapes(spatial_shapes: LevelShapes) -> list[tuple[int, int]]:
    """``(h, w)`` of each level as ints, from an (L, 2) tensor or a sequence of pairs."""
    if isinstance(spatial_shapes, Tensor):
        spatial_shapes = spatial_shapes.tolist()
    return [(height, width) for height, width in spatial_shapes]


def _scale_xy(xy: Tensor, width: int, height: int) -> Tensor:
    """(..., 2) ``xy`` times ``(width, height)`` (the same float32 products as multiplying by
    a ``[width, height]`` tensor, without building one from possibly symbolic sizes)."""
    return torch.stack([xy[..., 0] * width, xy[..., 1] * height], dim=-1)


def _pixel_centres(height: int, width: int, like: Tensor) -> Tensor:
    """(H * W, 2) ``xy`` pixel centres in feature-map pixels, row-major (y outer)."""
    ys = torch.arange(height, dtype=like.dtype, device=like.device) + 0.5
    xs = torch.arange(width, dtype=like.dtype, device=like.device) + 0.5
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing='ij')
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)


def get_reference_points(spatial_shapes: LevelShapes, valid_ratios: Tensor) -> Tensor:
    """Encoder reference points: every pixel centre, seen from every level.

    A centre is normalised by its own level's valid size (so 1.0 is the image border, not the
    padding border), then multiplied by each level's valid ratio, which converts it to that
    level's padded coordinates for sampling.

    Args:
        spatial_shapes: (L, 2) long ``(h, w)`` per level, or L ``(h, w)`` int pairs.
        valid_ratios: (B, L, 2) ``(w, h)`` valid ratios.

    Returns:
        (B, S, L, 2) ``xy`` in [0, 1] of the padded maps, ``S = sum(h * w)``.
    """
    per_level = []
    for level, (height, width) in enumerate(level_shapes(spatial_shapes)):
        centres = _pixel_centres(height, width, valid_ratios)  # [HW, 2]
        valid_size = _scale_xy(valid_ratios[:, level], width, height)  # [B, 2]
        per_level.append(centres[None] / valid_size[:, None])  # [B, HW, 2]
    reference_points = torch.cat(per_level, dim=1)  # [B, S, 2]
    return reference_points[:, :, None] * valid_ratios[:, None]


def scale_by_valid_ratios(reference_points: Tensor, valid_ratios: Tensor) -> Tensor:
    """Decoder reference points seen from every level.

    Args:
        reference_points: (B, Q, 2) ``xy`` or (B, Q, 4) ``cxcywh``, normalised to the valid
            (unpadded) image.
        valid_ratios: (B, L, 2) ``(w, h)`` valid ratios.

    Returns:
        (B, Q, L, 2 or 4) normalised to each level's padded map.
    """
    if reference_points.size(-1) == 4:
        valid_ratios = torch.cat([valid_ratios, valid_ratios], dim=-1)
    elif reference_points.size(-1) != 2:
        raise ValueError('reference points must be (B, Q, 2) xy or (B, Q, 4) cxcywh, got '
                         f'{tuple(reference_points.shape)}')
    return reference_points[:, :, None] * valid_ratios[:, None]


def gen_encoder_output_proposals(memory: Tensor, memory_mask: Tensor | None,
                                 spatial_shapes: LevelShapes) -> tuple[Tensor, Tensor]:
    """One square proposal per encoder position, for two-stage query selection.

    Each position proposes a box centred on its pixel centre, normalised by the image's valid
    size at that level (computed from the mask), with side ``0.05 * 2 ** level``.

    Args:
        memory: (B, S, C) encoder output, ``S = sum(h * w)``.
        memory_mask: (B, S) bool, True on padding; None when nothing is padded.
        spatial_shapes: (L, 2) long ``(h, w)`` per level, or L ``(h, w)`` int pairs.

    Returns:
        output_memory: (B, S, C) ``memory`` with padded and invalid positions set to 0.
        output_proposals: (B, S, 4) ``cxcywh`` in inverse-sigmoid space; ``+inf`` at padded
            positions and where any coordinate falls outside (0.01, 0.99).
    """
    batch_size = memory.size(0)
    proposals, start = [], 0
    for level, (height, width) in enumerate(level_shapes(spatial_shapes)):
        if memory_mask is None:
            valid_size = _scale_xy(memory.new_ones(batch_size, 2), width, height)
        else:
            level_mask = memory_mask[:, start:start + height * width].view(-1, height, width)
            valid_size = _scale_xy(get_valid_ratio(level_mask), width, height)
        centres = _pixel_centres(height, width, memory)[None] / valid_size[:, None]  # [B,HW,2]
        wh = torch.full_like(centres, PROPOSAL_BASE_SIZE * 2.0 ** level)
        proposals.append(torch.cat([centres, wh], dim=-1))
        start += height * width
    proposals = torch.cat(proposals, dim=1)  # [B, S, 4]
    low, high = PROPOSAL_VALID_RANGE
    invalid = ~((proposals > low) & (proposals < high)).all(-1, keepdim=True)  # [B, S, 1]
    if memory_mask is not None:
        invalid = invalid | memory_mask[..., None]
    output_proposals = torch.log(proposals / (1 - proposals)).masked_fill(invalid, float('inf'))
    output_memory = memory.masked_fill(invalid, 0.0)
    return output_memory, output_proposals


def refine_reference_points(deltas: Tensor, reference_points: Tensor,
                            eps: float = 1e-5) -> Tensor:
    """Iterative box refinement: add a regression output to the reference in logit space.

    Args:
        deltas: (B, Q, 4) regression branch output.
        reference_points: (B, Q, 4) ``cxcywh`` or (B, Q, 2) ``xy`` in [0, 1]; for points only
            the centre is offset and the size comes from ``deltas`` alone (Deformable-DETR).
        eps: clamp of :func:`inverse_sigmoid` (1e-5 Deformable-DETR, 1e-3 DINO).

    Returns:
        (B, Q, 4) refined ``cxcywh`` in [0, 1].
    """
    if reference_points.size(-1) == 4:
        return (deltas + inverse_sigmoid(reference_points, eps)).sigmoid()
    centre = deltas[..., :2] + inverse_sigmoid(reference_points, eps)
    return torch.cat([centre, deltas[..., 2:]], dim=-1).sigmoid()


def lift_points_to_boxes(points: Tensor) -> Tensor:
    """(..., 2) ``xy`` -> (..., 4) ``xy, 0.5, 0.5``.

    A size of 0.5 is 0 in logit space, so ``refine_reference_points(d, lifted)`` equals
    ``refine_reference_points(d, points)``: the lifted form can be stacked with the refined
    4-d references and still gives a head the same predictions.
    """
    return torch.cat([points, torch.full_like(points, 0.5)], dim=-1)


def stack_decoder_outputs(hidden_states: list[Tensor], references: list[Tensor],
                          return_intermediate: bool) -> tuple[Tensor, Tensor]:
    """Stack per-layer outputs; without intermediates keep the last layer only.

    Args:
        hidden_states: N tensors (B, Q, C), one per layer.
        references: N + 1 tensors (B, Q, D): the input reference, then one per layer.
        return_intermediate: keep every layer.

    Returns:
        (N, B, Q, C) and (N + 1, B, Q, D); or (1, B, Q, C) and (2, B, Q, D) holding the last
        layer and the reference it was given, so ``references[i]`` always goes with
        ``hidden_states[i]``.
    """
    if not return_intermediate:
        hidden_states, references = hidden_states[-1:], references[-2:]
    return torch.stack(hidden_states), torch.stack(references)
