"""Pasting RoI mask probabilities into the image (MMDetection's ``_do_paste_mask``).

Each ``M x M`` probability map covers its box exactly; every image pixel inside the box
samples it bilinearly at the pixel centre (``grid_sample``, zeros outside the map), and the
pixel is in the mask if that value reaches the threshold. On a CPU each mask is pasted into
its own box's window only; on an accelerator, chunks of masks are pasted into the window
their boxes span, sized to stay under ``GPU_MEM_LIMIT``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

BYTES_PER_FLOAT = 4
GPU_MEM_LIMIT = 1024 ** 3  # bytes of float32 pasting buffer per chunk (MMDetection's 1 GB)


def _window(boxes: Tensor, height: int, width: int) -> tuple[int, int, int, int]:
    """Integer ``(x0, y0, x1, y1)`` pixel window holding the boxes, one pixel of margin."""
    x0 = max(int(math.floor(boxes[:, 0].min().item())) - 1, 0)
    y0 = max(int(math.floor(boxes[:, 1].min().item())) - 1, 0)
    x1 = min(int(math.ceil(boxes[:, 2].max().item())) + 1, width)
    y1 = min(int(math.ceil(boxes[:, 3].max().item())) + 1, height)
    return x0, y0, x1, y1


def paste_window(probs: Tensor, boxes: Tensor, window: tuple[int, int, int, int]) -> Tensor:
    """``(n, y1 - y0, x1 - x0)`` values of ``probs (n, M, M)`` in the pixels of ``window``.

    Pixel ``(x, y)`` reads the map at its centre ``(x + 0.5, y + 0.5)`` mapped linearly
    from the box ``[bx1, bx2] x [by1, by2]`` onto ``[-1, 1]`` (``align_corners=False``: -1
    and 1 are the outer edges of the map's first and last cells).
    """
    x0, y0, x1, y1 = window
    px = torch.arange(x0, x1, device=boxes.device, dtype=torch.float32) + 0.5
    py = torch.arange(y0, y1, device=boxes.device, dtype=torch.float32) + 0.5
    bx1, by1, bx2, by2 = boxes.float().unbind(1)
    gx = (px[None] - bx1[:, None]) / (bx2 - bx1).clamp(min=1e-6)[:, None] * 2 - 1  # [n, w]
    gy = (py[None] - by1[:, None]) / (by2 - by1).clamp(min=1e-6)[:, None] * 2 - 1  # [n, h]
    grid = torch.stack([gx[:, None, :].expand(-1, len(py), -1),
                        gy[:, :, None].expand(-1, -1, len(px))], dim=3)  # [n, h, w, 2]
    return F.grid_sample(probs[:, None].float(), grid, align_corners=False)[:, 0]


def paste_masks(probs: Tensor, boxes: Tensor, out_shape: tuple[int, int],
                threshold: float = 0.5) -> Tensor:
    """``(D, H, W)`` bool masks of ``probs (D, M, M)`` in [0, 1] pasted into their
    ``boxes (D, 4)`` (xyxy pixels of an ``out_shape = (H, W)`` image), thresholded at
    ``threshold`` (pixels reaching it are in)."""
    height, width = (int(v) for v in out_shape)
    out = torch.zeros(len(boxes), height, width, dtype=torch.bool, device=boxes.device)
    if len(boxes) == 0:
        return out
    if boxes.device.type == 'cpu':
        chunk = 1  # each mask only touches its own box
    else:
        chunk = max(1, int(GPU_MEM_LIMIT // (BYTES_PER_FLOAT * height * width)))
    for start in range(0, len(boxes), chunk):
        part = slice(start, start + chunk)
        x0, y0, x1, y1 = _window(boxes[part], height, width)
        if x1 <= x0 or y1 <= y0:
            continue  # the boxes lie outside the image
        values = paste_window(probs[part], boxes[part], (x0, y0, x1, y1))
        out[part, y0:y1, x0:x1] = values >= threshold
    return out
