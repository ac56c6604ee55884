"""Do the branches of a Co-DETR agree on the shared encoder? (the paper's optimisation-conflict
analysis, section 4.3 and appendix: eq. 9-10, Fig. 6, 8, 9).

A *branch* is a group of the detector's training losses: ``detr`` (the one-to-one head:
every decoder layer, the encoder proposals and the denoising queries), each aux head
``NAME`` (its own losses, times lambda_2 * decoder layers as in training) and each head's
positive queries ``NAME.pos`` (the decoder pass on its positives, times lambda_1). Per image
and branch b with loss ``L_b``:

* **gradient agreement**: the cosine similarity of ``dL_b/dF`` between branches, with F the
  encoder output (the memory every branch reads), and of ``dL_b/dtheta`` with theta the
  encoder's parameters. 1: the branches push the encoder the same way; 0: unrelated;
  negative: they fight. Averaged over the images.
* **CAM distance** (paper eq. 9): Grad-CAM (Selvaraju et al. 2017) of each branch on the
  encoder output, with the branch's objective ``y_b = -L_b`` as the score: per level j,
  ``alpha_c = mean_hw dy_b/dF_j[c]``, ``CAM_j = ReLU(sum_c alpha_c F_j[c])``; the levels'
  maps (image part only) are resized to the image and summed, then normalised into a
  distribution over pixels (mixed with 1e-4 of the uniform one so that KL stays finite).
  ``S_ij = mean over images of KL(C_i || C_j)``; the distance of head i is
  ``S_i = mean_{j != i} (S_ij + S_ji) / 2`` (paper eq. 10 with the mean over the other heads).

Randomness inside the losses (denoising noise, positive subsampling, RoI sampling) is seeded
per image. The model stays in eval mode (frozen normalisation statistics, no dropout).
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codetr.structures import DetDataSample

from .discriminability import image_size
from .model_inputs import valid_size

ONE_TO_ONE = 'detr'
UNIFORM_MIX = 1e-4  # share of the uniform distribution mixed into every CAM


def branch_of(key: str, aux_names: Sequence[str]) -> str:
    """The branch a loss key belongs to (``'detr'``, ``NAME`` or ``NAME.pos``)."""
    for name in aux_names:
        if key.startswith(f'{name}.pos.'):
            return f'{name}.pos'
    for name in aux_names:
        if key.startswith(f'{name}.'):
            return name
    return ONE_TO_ONE


def branch_losses(losses: dict, aux_names: Sequence[str]) -> dict[str, Tensor]:
    """Sum of every ``loss`` entry per branch, in the order detr, heads, positive queries."""
    order = [ONE_TO_ONE, *aux_names, *(f'{name}.pos' for name in aux_names)]
    sums: dict[str, Tensor] = {}
    for key, value in losses.items():
        if 'loss' not in key:
            continue
        total = sum(value) if isinstance(value, (list, tuple)) else value
        branch = branch_of(key, aux_names)
        sums[branch] = sums[branch] + total if branch in sums else total
    return {name: sums[name] for name in order if name in sums}


def cosine_matrix(vectors: Sequence[Tensor]) -> Tensor:
    """``(K, K)`` cosine similarity of K flattened vectors (0 where one is all zero)."""
    flat = torch.stack([v.flatten().double() for v in vectors])
    norms = flat.norm(dim=1)
    unit = flat / torch.where(norms > 0, norms, torch.ones_like(norms))[:, None]
    return unit @ unit.T


def grad_cam(feature: Tensor, grad: Tensor) -> Tensor:
    """Grad-CAM ``(h, w)`` of a ``(C, h, w)`` feature map given ``(C, h, w)`` d score / d F."""
    alpha = grad.mean(dim=(1, 2))
    return torch.relu((alpha[:, None, None] * feature).sum(0))


def cam_distribution(cams: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
    """Level CAMs ``(h_j, w_j)`` resized to ``size`` and summed, as a distribution over the
    ``H * W`` pixels, mixed with :data:`UNIFORM_MIX` of the uniform one (uniform if the CAM
    is all zero)."""
    total = sum(F.interpolate(c[None, None].double(), size=size, mode='bilinear',
                              align_corners=False)[0, 0] for c in cams).flatten().clamp(min=0)
    uniform = torch.full_like(total, 1.0 / total.numel())
    if float(total.sum()) <= 0:
        return uniform
    return (1 - UNIFORM_MIX) * total / total.sum() + UNIFORM_MIX * uniform


def kl_matrix(distributions: Sequence[Tensor]) -> Tensor:
    """``(K, K)`` with entry (i, j) = KL(P_i || P_j) of K distributions over the same pixels."""
    logs = torch.stack([p.double().log() for p in distributions])
    probs = logs.exp()
    # KL(P_i || P_j) = sum P_i log P_i - sum P_i log P_j, >= 0 up to rounding
    return ((probs * logs).sum(1)[:, None] - probs @ logs.T).clamp(min=0)


def head_distances(kl: np.ndarray) -> np.ndarray:
    """``S_i = mean_{j != i} (S_ij + S_ji) / 2`` from the ``(K, K)`` mean KL matrix."""
    size = len(kl)
    if size < 2:
        return np.zeros(size)
    symmetric = (kl + kl.T) / 2
    return (symmetric.sum(1) - np.diag(symmetric)) / (size - 1)


@contextmanager
def capture_output(module: nn.Module):
    """The outputs of every call of ``module`` during the block, in the yielded list."""
    outputs: list = []
    handle = module.register_forward_hook(lambda _m, _a, out: outputs.append(out))
    try:
        yield outputs
    finally:
        handle.remove()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def image_gradients(model: nn.Module, inputs: Tensor, sample: DetDataSample,
                    seed: int = 0) -> dict:
    """Per branch, the gradients of its loss on the encoder for one image.

    Returns:
        ``memory``: ``(S, C)`` encoder output; ``level_shapes``: ``[(h_j, w_j)]``;
        ``branches``: names; ``memory_grads``: per branch ``(S, C)``; ``param_grads``: per
        branch the flattened gradient over the encoder's parameters.
    """
    encoder = model.query_head.transformer.encoder
    params = [p for p in encoder.parameters() if p.requires_grad]
    seed_everything(seed)
    feature_source = model.neck if model.neck is not None else model.backbone
    with torch.enable_grad(), capture_output(encoder) as memories, \
            capture_output(feature_source) as feats:
        losses = model.loss(inputs, [sample])
        if len(memories) != 1:
            raise RuntimeError(f'the encoder ran {len(memories)} times in one loss call')
        memory = memories[0]
        branches = branch_losses(losses, tuple(model.aux_heads))
        memory_grads, param_grads = [], []
        for loss in branches.values():
            grads = torch.autograd.grad(loss, [memory, *params], retain_graph=True,
                                        allow_unused=True)
            memory_grads.append(grads[0][0].detach())
            param_grads.append(torch.cat([
                (g if g is not None else torch.zeros_like(p)).flatten().detach()
                for g, p in zip(grads[1:], params)]))
    return dict(memory=memory[0].detach(), level_shapes=[tuple(f.shape[-2:]) for f in feats[0]],
                branches=list(branches), memory_grads=memory_grads, param_grads=param_grads)


def split_memory(flat: Tensor, shapes: Sequence[tuple[int, int]]) -> list[Tensor]:
    """``(S, C)`` -> ``(C, h_j, w_j)`` per level."""
    chunks = flat.split([h * w for h, w in shapes])
    return [c.T.reshape(-1, h, w) for c, (h, w) in zip(chunks, shapes)]


def branch_cams(grads: dict, sample: DetDataSample) -> list[Tensor]:
    """Per branch the CAM distribution ``(H * W,)`` over the image's pixels."""
    feats = split_memory(grads['memory'], grads['level_shapes'])
    size = image_size(sample)
    cams = []
    for memory_grad in grads['memory_grads']:
        level_cams = []
        # the branch's score is -loss: its gradient is -dL/dF
        for feat, grad in zip(feats, split_memory(-memory_grad, grads['level_shapes'])):
            h, w = valid_size(feat, sample)
            level_cams.append(grad_cam(feat[:, :h, :w], grad[:, :h, :w]))
        cams.append(cam_distribution(level_cams, size))
    return cams


def analyse(model: nn.Module, cfg, split: str = 'test', max_images: int | None = None,
            seed: int = 0, keep_examples: int = 0) -> dict:
    """Gradient cosines and CAM distances of every branch over a dataset split.

    Images without ground-truth boxes are skipped. Returns ``branches``, ``images``,
    ``memory_cosine`` / ``param_cosine`` (``mean`` and ``std`` ``(K, K)`` lists over the
    images), ``cam_kl`` (``(K, K)`` mean KL, the paper's S_ij), ``head_distance`` (S_i per
    branch), ``grad_norm`` (mean norm of each branch's memory gradient) and ``examples``:
    the first ``keep_examples`` images as ``(packed item, [CAM (H, W) per branch])``.
    """
    from .model_inputs import iter_images, preprocess

    branches: list[str] | None = None
    mem_cos, par_cos, kls, norms, examples = [], [], [], [], []
    for index, item in enumerate(iter_images(cfg, split, max_images)):
        inputs, samples = preprocess(model, item)
        if len(samples[0].gt_instances) == 0:
            continue
        grads = image_gradients(model, inputs, samples[0], seed=seed + index)
        if branches is None:
            branches = grads['branches']
        elif grads['branches'] != branches:
            raise RuntimeError(f'image {index} produced branches {grads["branches"]}, '
                               f'earlier images {branches}')
        cams = branch_cams(grads, samples[0])
        mem_cos.append(cosine_matrix(grads['memory_grads']))
        par_cos.append(cosine_matrix(grads['param_grads']))
        kls.append(kl_matrix(cams))
        norms.append(torch.stack([g.double().norm() for g in grads['memory_grads']]))
        if len(examples) < keep_examples:
            size = image_size(samples[0])
            examples.append((item, [c.view(size).float() for c in cams]))
    if branches is None:
        raise ValueError(f'no image of the {split} split has ground-truth boxes')
    kl = torch.stack(kls).mean(0).numpy()

    def stats(mats: list[Tensor]) -> dict:
        stacked = torch.stack(mats)
        std = stacked.std(0) if len(mats) > 1 else torch.zeros_like(stacked[0])
        return dict(mean=_round(stacked.mean(0)), std=_round(std))

    return dict(branches=branches, images=len(kls), memory_cosine=stats(mem_cos),
                param_cosine=stats(par_cos), cam_kl=_round(torch.from_numpy(kl)),
                head_distance=dict(zip(branches, [round(float(v), 6)
                                                  for v in head_distances(kl)])),
                grad_norm=dict(zip(branches, [round(float(v), 6)
                                              for v in torch.stack(norms).mean(0)])),
                examples=examples)


def _round(matrix: Tensor) -> list[list[float]]:
    return [[round(float(v), 6) for v in row] for row in matrix]
