"""Feature discriminability of the encoder and IoF-IoB curves (Co-DETR paper, section 3.4,
Fig. 2 and Fig. 3).

Definitions, as the paper gives them:

* **Score map of a level**: the L2 norm over channels of level j's encoder output at each
  location, scaled into [0, 1] over the image: ``(||F_j|| - min) / (max - min)`` by default
  (``norm='minmax'``), or ``||F_j|| / max(||F_j||)`` as the paper's eq. 7 writes it
  (``norm='max'``). The encoder ends in a LayerNorm, so every location's norm is close to
  the others': on the quick-start Co-DINO the eq. 7 scores of every level lie within
  [0.94, 1] (K = 2) or [0.98, 1] (K = 0), and thresholds S in [0, 1] cannot tell them apart,
  whereas the paper's curves spread over the whole range; min-max scaling restores that.
* **Discriminability** ``D(F) = 1/J sum_j S_j``: the J level maps, each resized (bilinear)
  to the image, averaged. Only the part of each map that covers the image is used.
* **Indicators**: foreground ``1(D(F) > S)``, background ``1(D(F) < S)`` for a score
  threshold S in [0, 1]; the GT foreground mask is 1 at the pixels whose centre lies inside
  a ground-truth box.
* **IoF** (paper eq. 8) ``= sum_hw 1(D > S) M_fg / sum_hw M_fg``: the share of the
  foreground that scores above S. **IoB** ``= sum_hw 1(D < S) M_bg / sum_hw M_bg``: the share
  of the background that scores below S, "computed in a similar way" with the background
  indicator. Over a dataset both sum their pixel counts over every image (images without GT
  boxes are left out). ``bg_above = 1 - IoB`` (up to ties with S) is the share of the
  background scoring above S, and ``auc`` the probability that a foreground pixel outscores
  a background one (ties count half; scores binned at 2**-14): the area under IoF against
  ``bg_above`` over all thresholds (0.5 for an uninformative map, 1 for a perfect one).

The decoder curves of Fig. 2 use the same steps on cross-attention maps
(:mod:`codetr.analysis.decoder_attention`).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codetr.structures import DetDataSample

from .model_inputs import valid_size

NORMS = ('minmax', 'max')
NUM_THRESHOLDS = 101  # S = 0, 0.01, ..., 1
AUC_BINS = 2**14  # score resolution of the AUC
MIN_RELATIVE_SPREAD = 1e-4  # min-max: a smaller spread is float rounding, not contrast


def level_score(level: Tensor, norm: str = 'minmax') -> Tensor:
    """``(C, h, w)`` features -> ``(h, w)`` channel L2 norm scaled into [0, 1] (see module
    docstring); a constant map scores 0 under ``minmax`` (and ``max`` when it is 0)."""
    if norm not in NORMS:
        raise ValueError(f'norm={norm!r} must be one of {NORMS}')
    score = level.float().norm(dim=0)
    return normalise(score, norm)


def normalise(score: Tensor, norm: str = 'minmax') -> Tensor:
    """A non-negative ``(h, w)`` map divided by its max, or min-max scaled.

    Under ``minmax`` a map whose spread is within float rounding of its values (below
    ``MIN_RELATIVE_SPREAD`` of its max, e.g. the equal norms of a LayerNorm with unit gain
    and zero bias) has no contrast and scores 0, rather than its rounding noise stretched
    over [0, 1].
    """
    if norm == 'minmax':
        spread = score.max() - score.min()
        if spread <= MIN_RELATIVE_SPREAD * score.abs().max():
            return torch.zeros_like(score)
        score = score - score.min()
    top = score.max()
    return score / top if top > 0 else torch.zeros_like(score)


def average_levels(scores: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
    """``(h_j, w_j)`` maps -> ``(H, W)``: each resized (bilinear) to ``size``, averaged."""
    resized = [F.interpolate(s[None, None].float(), size=size, mode='bilinear',
                             align_corners=False)[0, 0] for s in scores]
    return torch.stack(resized).mean(0)


def discriminability(levels: Sequence[Tensor], size: tuple[int, int],
                     norm: str = 'minmax') -> Tensor:
    """``D(F)``: ``(C, h_j, w_j)`` level features (image part only) -> ``(H, W)`` in [0, 1]."""
    return average_levels([level_score(level, norm) for level in levels], size)


def foreground_mask(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """``(H, W)`` bool, True at the pixels whose centre lies inside one of the ``(N, 4)``
    xyxy boxes (pixels of the same grid as ``size``)."""
    height, width = size
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    mask = torch.zeros(height, width, dtype=torch.bool)
    for x1, y1, x2, y2 in boxes.float().tolist():
        rows = (ys >= y1) & (ys < y2)
        cols = (xs >= x1) & (xs < x2)
        mask |= rows[:, None] & cols[None, :]
    return mask


class IoFIoB:
    """IoF / IoB over a dataset at ``num_thresholds`` thresholds evenly spaced in [0, 1].

    ``update`` adds one image's score map and foreground mask; ``result`` gives the curves.
    Pixel counts are kept per threshold, so memory does not grow with the dataset.
    """

    def __init__(self, num_thresholds: int = NUM_THRESHOLDS) -> None:
        self.thresholds = torch.linspace(0, 1, num_thresholds, dtype=torch.float64)
        self.fg_above = torch.zeros(num_thresholds, dtype=torch.float64)
        self.bg_below = torch.zeros(num_thresholds, dtype=torch.float64)
        self.bg_above = torch.zeros(num_thresholds, dtype=torch.float64)
        self.fg_hist = torch.zeros(AUC_BINS, dtype=torch.float64)
        self.bg_hist = torch.zeros(AUC_BINS, dtype=torch.float64)
        self.fg_total = 0.0
        self.bg_total = 0.0
        self.images = 0

    def _above(self, scores: Tensor) -> Tensor:
        """Per threshold S_k: how many ``scores`` are > S_k."""
        # bucketize(right=False): the number of thresholds strictly below each score
        below_count = torch.bucketize(scores, self.thresholds, right=False)
        hist = torch.bincount(below_count, minlength=len(self.thresholds) + 1).double()
        return len(scores) - hist.cumsum(0)[:-1]

    def _below(self, scores: Tensor) -> Tensor:
        """Per threshold S_k: how many ``scores`` are < S_k."""
        # bucketize(right=True): the number of thresholds <= each score; S_k > s iff that <= k
        at_most = torch.bucketize(scores, self.thresholds, right=True)
        hist = torch.bincount(at_most, minlength=len(self.thresholds) + 1).double()
        return hist.cumsum(0)[:-1]

    def update(self, score: Tensor, fg_mask: Tensor) -> None:
        """Add an ``(H, W)`` score map and its ``(H, W)`` bool foreground mask; an image
        without foreground is skipped (its IoF is undefined)."""
        if score.shape != fg_mask.shape:
            raise ValueError(f'score map {tuple(score.shape)} and foreground mask '
                             f'{tuple(fg_mask.shape)} differ in shape')
        if not bool(fg_mask.any()):
            return
        scores = score.detach().double().flatten()
        fg = fg_mask.flatten()
        self.fg_above += self._above(scores[fg])
        self.bg_below += self._below(scores[~fg])
        self.bg_above += self._above(scores[~fg])
        bins = (scores.clamp(0, 1) * AUC_BINS).long().clamp(max=AUC_BINS - 1)
        self.fg_hist += torch.bincount(bins[fg], minlength=AUC_BINS).double()
        self.bg_hist += torch.bincount(bins[~fg], minlength=AUC_BINS).double()
        self.fg_total += float(fg.sum())
        self.bg_total += float((~fg).sum())
        self.images += 1

    def result(self) -> dict:
        """``thresholds``, ``iof``, ``iob``, ``bg_above`` (lists), ``auc``, pixel counts."""
        if self.images == 0:
            raise ValueError('no image with ground-truth boxes was seen; IoF is undefined')
        iof = self.fg_above / self.fg_total
        bg_total = max(self.bg_total, 1.0)
        iob, bg_above = self.bg_below / bg_total, self.bg_above / bg_total
        # Mann-Whitney: background pixels in lower bins, plus half of those in the same bin
        bg_lower = self.bg_hist.cumsum(0) - self.bg_hist
        wins = (self.fg_hist * (bg_lower + self.bg_hist / 2)).sum()
        auc = float(wins / (self.fg_total * bg_total)) if self.bg_total else 1.0
        return dict(thresholds=[round(float(t), 4) for t in self.thresholds],
                    iof=_rounded(iof), iob=_rounded(iob), bg_above=_rounded(bg_above),
                    auc=round(auc, 5), images=self.images, fg_pixels=int(self.fg_total),
                    bg_pixels=int(self.bg_total))


def _rounded(values: Tensor) -> list[float]:
    return [round(float(v), 5) for v in values]


@torch.no_grad()
def encoder_levels(model: nn.Module, inputs: Tensor,
                   sample: DetDataSample) -> list[Tensor]:
    """The encoder output of one image as ``(C, h_j, w_j)`` maps of the image part of each
    level, through the query head's public ``encode_memory``."""
    feats = model.extract_feat(inputs)
    memory = model.query_head.encode_memory(feats, [sample])
    levels = []
    for level in memory:
        h, w = valid_size(level, sample)
        levels.append(level[0, :, :h, :w])
    return levels


def image_size(sample: DetDataSample) -> tuple[int, int]:
    """``(H, W)`` of the network input's image part (``img_shape``)."""
    return tuple(int(v) for v in sample.metainfo['img_shape'][:2])


def score_overlay(img_rgb: np.ndarray, score: Tensor, alpha: float = 0.5) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB image blended with the ``(H, W)`` score map in a jet colour
    map (Fig. 3 style)."""
    import matplotlib

    colours = matplotlib.colormaps['jet'](score.clamp(0, 1).cpu().numpy())[..., :3]
    blended = (1 - alpha) * img_rgb.astype(np.float64) / 255 + alpha * colours
    return (blended * 255).round().astype(np.uint8)


def analyse(model: nn.Module, cfg, split: str = 'test', max_images: int | None = None,
            norm: str = 'minmax', decoder_layer: int | None = -1,
            keep_examples: int = 0) -> dict:
    """Encoder (and decoder) IoF-IoB curves of one model over a dataset split.

    Returns ``encoder`` (and ``decoder``, unless ``decoder_layer`` is None) as
    :meth:`IoFIoB.result` gives them, and ``examples``: the first ``keep_examples`` images as
    ``(packed item, encoder D(F) (H, W))``.
    """
    from .decoder_attention import positive_attention_levels
    from .model_inputs import gt_boxes, iter_images, preprocess

    enc_curve, dec_curve, examples = IoFIoB(), IoFIoB(), []
    for item in iter_images(cfg, split, max_images):
        inputs, samples = preprocess(model, item)
        sample = samples[0]
        size = image_size(sample)
        fg = foreground_mask(gt_boxes(sample), size)
        score = discriminability(encoder_levels(model, inputs, sample), size, norm)
        enc_curve.update(score, fg)
        if len(examples) < keep_examples:
            examples.append((item, score))
        if decoder_layer is not None and bool(fg.any()):
            attention = positive_attention_levels(model, inputs, sample, decoder_layer)
            dec_curve.update(average_levels([normalise(a, norm) for a in attention], size), fg)
    result = dict(encoder=enc_curve.result(), examples=examples)
    if decoder_layer is not None:
        result['decoder'] = dec_curve.result()
    return result
