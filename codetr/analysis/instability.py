"""Instability of the one-to-one matching across training epochs (DN-DETR, Li et al. 2022,
section 3; the Co-DETR paper's Fig. 5).

For every image of a dataset and every decoder layer, the head's Hungarian assigner matches
the layer's predictions of a checkpoint to the ground truth. Between two consecutive
checkpoints (epochs i - 1 and i):

* **IS** (DN-DETR's definition): with ``V^i_n`` the GT index matched to query n at epoch i
  (-1 for none), ``IS^i = sum_n 1(V^i_n != V^{i-1}_n)`` per image, averaged over the images.
  A GT box moving from query a to query b changes two entries.
* **changed fraction**: the share of the ground-truth boxes whose matched query differs
  (what "how often a box's query changes" counts directly; ``IS`` is at most twice it times
  the GT count).

Query n is the n-th output slot of the decoder. In two-stage heads (Co-DINO, DINO) slot n
holds the n-th ranked encoder proposal with the n-th learned content query; in heads with
learned anchors it is the n-th anchor. Images go through the test pipeline (no random
augmentation), so only the weights differ between epochs.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from mmengine.config import Config
from torch import nn

from .model_inputs import hungarian_matches, iter_images, preprocess, query_head_outputs


def query_assignment(query_of_gt: np.ndarray, num_queries: int) -> np.ndarray:
    """``V``: ``(Q,)`` GT index matched to each query (-1 for none), from the ``(G,)`` query
    index of each GT box (-1 for an unmatched box)."""
    assignment = np.full(num_queries, -1, dtype=np.int64)
    matched = query_of_gt >= 0
    assignment[query_of_gt[matched]] = np.nonzero(matched)[0]
    return assignment


def compare_matchings(previous: Sequence[np.ndarray], current: Sequence[np.ndarray],
                      num_queries: int) -> dict:
    """IS and changed fraction between two epochs' matchings of the same images.

    Args:
        previous, current: per image, the ``(G,)`` query index of each GT box.
        num_queries: Q, the number of decoder queries.

    Returns:
        ``is_per_image`` (mean IS over the images), ``changed_fraction`` (changed GT boxes
        over all GT boxes), ``changed_gts``, ``num_gts``, ``images``.
    """
    if len(previous) != len(current):
        raise ValueError(f'{len(previous)} vs {len(current)} images: the epochs must be '
                         'matched on the same images')
    changed = total = 0
    instability = []
    for before, after in zip(previous, current):
        if before.shape != after.shape:
            raise ValueError('an image has a different number of GT boxes in two epochs')
        changed += int((before != after).sum())
        total += len(before)
        v_before = query_assignment(before, num_queries)
        v_after = query_assignment(after, num_queries)
        instability.append(int((v_before != v_after).sum()))
    return dict(is_per_image=round(float(np.mean(instability)) if instability else 0.0, 4),
                changed_fraction=round(changed / total, 5) if total else 0.0,
                changed_gts=changed, num_gts=total, images=len(current))


@torch.no_grad()
def layer_matchings(model: nn.Module, cfg: Config, split: str = 'test',
                    max_images: int | None = None) -> list[list[np.ndarray]]:
    """``[layer][image]``: the ``(G,)`` query matched to each GT box, per decoder layer."""
    per_layer: list[list[np.ndarray]] = []
    for item in iter_images(cfg, split, max_images):
        inputs, samples = preprocess(model, item)
        cls_scores, bbox_preds = query_head_outputs(model, inputs, samples)
        if not per_layer:
            per_layer = [[] for _ in range(len(cls_scores))]
        for layer in range(len(cls_scores)):
            matches = hungarian_matches(model, cls_scores[layer], bbox_preds[layer], samples)
            per_layer[layer].append(matches[0].numpy())
    if not per_layer:
        raise ValueError(f'the {split} split has no images')
    return per_layer


def num_queries_of(model: nn.Module) -> int:
    """Q: the decoder's query count (``query_head.num_queries``)."""
    return int(model.query_head.num_queries)


def instability_over_checkpoints(matchings: Sequence[list[list[np.ndarray]]],
                                 num_queries: int) -> list[list[dict]]:
    """``[pair][layer]`` :func:`compare_matchings` of consecutive checkpoints' matchings
    (each ``[layer][image]`` as :func:`layer_matchings` returns)."""
    return [[compare_matchings(before[layer], after[layer], num_queries)
             for layer in range(len(after))]
            for before, after in zip(matchings[:-1], matchings[1:])]
