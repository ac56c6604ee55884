"""The pieces of Probabilistic Anchor Assignment (PAA, Kim & Lee, ECCV 2020) that are not a
module: per-GT candidate selection, a two-component 1-D Gaussian mixture fitted by EM, the
split of the candidates at the positive component's peak, and score voting at test time.

PAA scores an anchor by how well it already predicts its GT box; in practice (the official
code and MMDetection) that score is the negative of the anchor's loss, classification plus
box, so the "higher score" component of the paper is the lower-loss component here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from codetr.structures import bbox_overlaps

# EM settings of scikit-learn's GaussianMixture, which PAA's reference code uses: stop when the
# mean log-likelihood changes by less than GMM_TOL, at most GMM_MAX_ITER rounds, and add
# GMM_REG_COVAR to every variance. Initialisation as PAA: means at the smallest and largest
# loss, unit variances, equal weights.
GMM_TOL = 1e-3
GMM_MAX_ITER = 100
GMM_REG_COVAR = 1e-6
# Score voting (PAA paper section 3.4, MMDetection's PAAHead): candidates overlapping a kept
# detection by more than VOTING_MIN_IOU vote for its box with weight
# exp(-(1 - IoU)^2 / VOTING_SIGMA) * score.
VOTING_SIGMA = 0.025
VOTING_MIN_IOU = 0.01


@dataclass
class GaussianMixture1D:
    """Per-row two-component mixtures: ``means``, ``variances``, ``weights`` all ``(R, 2)``.
    Component 0 starts at the row's smallest value (the positive component for losses)."""

    means: Tensor
    variances: Tensor
    weights: Tensor

    def weighted_log_prob(self, x: Tensor) -> Tensor:
        """``(R, K)`` values -> ``(R, K, 2)`` ``log w_j + log N(x | mu_j, var_j)``."""
        diff = x[..., None] - self.means[:, None, :]
        var = self.variances[:, None, :]
        log_normal = -0.5 * (math.log(2 * math.pi) + var.log() + diff ** 2 / var)
        return log_normal + self.weights[:, None, :].log()

    def predict(self, x: Tensor) -> Tensor:
        """``(R, K)`` component of each value (the first one on ties)."""
        return self.weighted_log_prob(x).argmax(-1)

    def score_samples(self, x: Tensor) -> Tensor:
        """``(R, K)`` log density of each value under its row's mixture."""
        return self.weighted_log_prob(x).logsumexp(-1)


def fit_gmm_1d(x: Tensor, valid: Tensor, max_iter: int = GMM_MAX_ITER, tol: float = GMM_TOL,
               reg_covar: float = GMM_REG_COVAR) -> GaussianMixture1D:
    """Fit one two-component 1-D Gaussian mixture per row by EM, all rows at once.

    Each row stops on its own when its mean log-likelihood changes by less than ``tol``
    (scikit-learn's rule, so a row gives the fit ``GaussianMixture(2, covariance_type='diag')``
    gives with PAA's initialisation).

    Args:
        x: ``(R, K)`` values, float64 advised; entries where ``valid`` is False are padding.
        valid: ``(R, K)`` bool, at least one True per row.
        max_iter, tol, reg_covar: EM settings.
    """
    valid_f = valid.to(x.dtype)
    count = valid_f.sum(1, keepdim=True)  # (R, 1)
    inf = torch.finfo(x.dtype).max
    lowest = torch.where(valid, x, x.new_full((), inf)).amin(1)
    highest = torch.where(valid, x, x.new_full((), -inf)).amax(1)
    gmm = GaussianMixture1D(means=torch.stack([lowest, highest], 1),
                            variances=torch.ones_like(x[:, :2]),
                            weights=torch.full_like(x[:, :2], 0.5))
    x = torch.where(valid, x, torch.zeros_like(x))  # padding must not poison the sums
    lower_bound = x.new_full((len(x),), -inf)
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)
    tiny = 10 * torch.finfo(x.dtype).eps
    for _ in range(max_iter):
        log_prob = gmm.weighted_log_prob(x)  # [R, K, 2]
        log_norm = log_prob.logsumexp(-1)  # [R, K]
        resp = (log_prob - log_norm[..., None]).exp() * valid_f[..., None]
        new_bound = (log_norm * valid_f).sum(1) / count[:, 0]
        nk = resp.sum(1) + tiny  # [R, 2]
        means = (resp * x[..., None]).sum(1) / nk
        variances = (resp * (x[..., None] - means[:, None]) ** 2).sum(1) / nk + reg_covar
        weights = nk / nk.sum(1, keepdim=True)
        keep = active[:, None]
        gmm = GaussianMixture1D(means=torch.where(keep, means, gmm.means),
                                variances=torch.where(keep, variances, gmm.variances),
                                weights=torch.where(keep, weights, gmm.weights))
        converged = (new_bound - lower_bound).abs() < tol
        lower_bound = torch.where(active, new_bound, lower_bound)
        active = active & ~converged
        if not bool(active.any()):
            break
    return gmm


def gmm_positives(losses: Tensor, valid: Tensor) -> Tensor:
    """PAA's split of each row's candidates, ``(R, K)`` sorted ascending -> ``(R, K)`` bool.

    A mixture is fitted per row; candidates of the low-loss component (component 0) are
    positive up to and including the one where the mixture's density peaks among them (PAA
    paper Fig. 3 (c), the official code's rule); everything else is negative. Rows with a
    single candidate keep it (too few values to fit two components; the reference code drops
    such a GT box, which then never trains).

    Args:
        losses: ``(R, K)`` candidate losses, each row sorted ascending over its valid entries,
            which come first.
        valid: ``(R, K)`` bool, at least one True per row.
    """
    positives = torch.zeros_like(valid)
    single = valid.sum(1) == 1
    positives[single, 0] = True
    rows = (~single).nonzero().squeeze(1)
    if len(rows) == 0:
        return positives
    # a few dozen values per GT box through up to 100 rounds: cheaper on the CPU than as
    # hundreds of tiny kernel launches (and float64 is slow on many GPUs)
    x, mask = losses[rows].detach().double().cpu(), valid[rows].cpu()
    gmm = fit_gmm_1d(x, mask)
    low = (gmm.predict(x) == 0) & mask
    density = torch.where(low, gmm.score_samples(x), x.new_full((), -math.inf))
    peak = density.argmax(1, keepdim=True)  # first maximum
    columns = torch.arange(x.size(1))[None]
    positives[rows] = (low & (columns <= peak)).to(positives.device)
    return positives


def topk_per_group(values: Tensor, groups: Tensor, num_groups: int,
                   k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` smallest values of every group, as a padded table.

    Args:
        values: ``(P,)`` e.g. candidate losses.
        groups: ``(P,)`` long in ``[0, num_groups)``.
        num_groups: number of groups (rows of the table).
        k: most entries kept per group.

    Returns:
        ``(num_groups, k)`` indices into ``values``, ascending by value within a row, and the
        ``(num_groups, k)`` bool mask of the entries that exist (valid entries come first).
    """
    order = values.argsort(stable=True)
    order = order[groups[order].argsort(stable=True)]  # by group, then by value
    sorted_groups = groups[order]
    counts = torch.bincount(sorted_groups, minlength=num_groups)
    starts = counts.cumsum(0) - counts
    rank = torch.arange(len(order), device=values.device) - starts[sorted_groups]
    keep = rank < k
    table = torch.zeros(num_groups, k, dtype=torch.long, device=values.device)
    mask = torch.zeros(num_groups, k, dtype=torch.bool, device=values.device)
    table[sorted_groups[keep], rank[keep]] = order[keep]
    mask[sorted_groups[keep], rank[keep]] = True
    return table, mask


def paa_select(losses: Tensor, gt_inds: Tensor, levels: Tensor, num_gts: int,
               num_levels: int, topk: int) -> Tensor:
    """PAA's choice among the initial positives of one image.

    Per GT box, the ``topk`` lowest-loss candidates of each level are gathered, sorted by
    loss, and split by :func:`gmm_positives`.

    Args:
        losses: ``(P,)`` loss of each initial positive (classification + box).
        gt_inds: ``(P,)`` long, 0-based GT box of each.
        levels: ``(P,)`` long, pyramid level of each.
        num_gts, num_levels: the sizes of those index ranges.
        topk: candidates per level and GT box (PAA: 9).

    Returns:
        ``(P,)`` bool, the initial positives that stay positive.
    """
    keep = torch.zeros_like(gt_inds, dtype=torch.bool)
    if len(losses) == 0:
        return keep
    per_level, level_mask = topk_per_group(losses, gt_inds * num_levels + levels,
                                           num_gts * num_levels, topk)
    # one row per GT box: its candidates of every level, ascending by loss
    candidates = per_level.view(num_gts, -1)
    present = level_mask.view(num_gts, -1)
    cand_loss = torch.where(present, losses[candidates], losses.new_full((), math.inf))
    cand_loss, order = cand_loss.sort(dim=1, stable=True)
    candidates, present = candidates.gather(1, order), present.gather(1, order)
    rows = present.any(1)
    chosen = gmm_positives(cand_loss[rows], present[rows])
    keep[candidates[rows][chosen]] = True
    return keep


def score_voting(det_boxes: Tensor, det_labels: Tensor, cand_boxes: Tensor,
                 cand_scores: Tensor, cand_labels: Tensor) -> Tensor:
    """PAA's score voting: each detection's box becomes the weighted mean of the same-class
    candidate boxes around it; scores and labels stay.

    Args:
        det_boxes: ``(D, 4)`` xyxy boxes kept by NMS; ``det_labels`` ``(D,)``.
        cand_boxes: ``(K, 4)`` xyxy boxes before NMS (every (anchor, class) pair above the
            score threshold), ``cand_scores (K,)``, ``cand_labels (K,)``; the detections are
            among them, so every detection has at least one voter (itself).

    Returns:
        ``(D, 4)`` voted boxes.
    """
    ious = bbox_overlaps(det_boxes, cand_boxes)  # [D, K]
    same = det_labels[:, None] == cand_labels[None, :]
    weights = torch.exp(-(1 - ious) ** 2 / VOTING_SIGMA) * cand_scores[None, :]
    weights = weights * (same & (ious > VOTING_MIN_IOU)).to(weights.dtype)
    total = weights.sum(1, keepdim=True)
    voted = weights @ cand_boxes / total.clamp(min=torch.finfo(total.dtype).tiny)
    return torch.where(total > 0, voted, det_boxes)
