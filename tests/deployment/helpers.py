"""Deterministic models whose detections are worth comparing, shared by the deployment tests.

A freshly initialised DETR head scores every (query, class) pair near its 0.01 prior: nothing
passes the 0.05 threshold of the parity check, and near-equal scores make any comparison
fragile. :func:`spread_head` gives the last layers' classifiers random weights and biases so
the top detections spread over 0.05..0.95 with clear gaps, and moves the boxes away from
their reference proposals; the rest of the network stays as initialised (seeded).

A random Co-DINO is also ill-conditioned in its two-stage selection: the decoder query of
rank i is the learned ``query_embed[i]``, placed at the i-th best encoder proposal, and a
random encoder's proposal scores tie to float32 rounding, so a 1-ulp difference swaps two
proposals' queries and changes both detections. Measured on Co-DINO R50 (900 queries),
coco128 at 320 x 320, eager PyTorch against itself: the pure-PyTorch attention kernel
instead of the C++ one moved a 0.99 detection by 6.97 px (score by 0.86); a 1e-6 relative
input perturbation, 3.76 px. No exported model can match a reference that PyTorch cannot
reproduce. ``same_query_content`` gives every query one (random) content vector, so the
decoder no longer depends on the order of the selected proposals; measured again: 1.2e-4 px,
5.6e-5 in score, for both perturbations.
"""
from __future__ import annotations

from pathlib import Path

import torch
from mmengine.config import Config
from torch import nn

from codetr.registry import MODELS

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART_K0 = ROOT / 'configs/quickstart/co_dino_r18_k0_quickstart_synthetic.py'
QUICKSTART_K2 = ROOT / 'configs/quickstart/co_dino_r18_k2_quickstart_synthetic.py'
QUICKSTART_K2_MASK = ROOT / 'configs/quickstart/co_dino_r18_k2_mask_quickstart_synthetic.py'
QUICKSTART_DEFORM = ROOT / 'configs/quickstart/deformable_detr_pp_r18_quickstart_synthetic.py'
R50_CO_DINO = ROOT / 'configs/co_dino/co_dino_5scale_r50_8xb2_1x_coco.py'
FIXTURE_CONFIG = ROOT / 'configs/tests/co_dino_tiny_fixture.py'
EXPORT_EXTRA = 'needs the export extra: pip install -r requirements/export.txt'
SYNTHETIC_CLASSES = ('circle', 'square', 'triangle', 'star', 'cross', 'ring', 'hexagon',
                     'ellipse')


def spread_head(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random classifier weights / biases and box offsets in every prediction branch."""
    gen = torch.Generator().manual_seed(seed)
    head = model.query_head
    with torch.no_grad():
        for branch in head.cls_branches:
            branch.weight.copy_(torch.randn(branch.weight.shape, generator=gen) * 0.15)
            branch.bias.copy_(torch.rand(branch.bias.shape, generator=gen) * 3 - 3)
        for branch in head.reg_branches:
            last = branch[-1]
            last.weight.copy_(torch.randn(last.weight.shape, generator=gen) * 0.02)
            last.bias.copy_(torch.randn(last.bias.shape, generator=gen) * 0.2)
    return model


def same_query_content(model: nn.Module, seed: int = 0) -> nn.Module:
    """One random content vector for every query of a Co-DINO head (see module note)."""
    embed = model.query_head.transformer.query_embed.weight
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        embed.copy_(torch.randn(embed.shape[1:], generator=gen).expand_as(embed))
    return model


def build_model(config: Path, cfg_options: dict | None = None, seed: int = 0,
                one_query_content: bool = False) -> nn.Module:
    """The config's detector: seeded init, spread head (and with ``one_query_content``
    :func:`same_query_content`), eval mode, ``cfg`` and class names."""
    cfg = Config.fromfile(str(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    spread_head(model, seed)
    if one_query_content:
        same_query_content(model, seed)
    model.cfg = cfg
    classes = cfg.get('test_dataloader', {}).get('dataset', {}).get('metainfo', {}).get(
        'classes')
    model.dataset_meta = {'classes': tuple(classes)} if classes else None
    return model.eval()
