"""Deterministic models whose detections are worth comparing, shared by the deployment tests.

A freshly initialised DETR head scores every (query, class) pair near its 0.01 prior: nothing
passes the 0.05 threshold of the parity check, and near-equal scores make any comparison
fragile. :func:`spread_head` gives the last layers' classifiers random weights and biases so
the top detections spread over 0.05..0.95 with clear gaps, and moves the boxes away from
their reference proposals; the rest of the network stays as initialised (seeded).
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


def build_model(config: Path, cfg_options: dict | None = None, seed: int = 0) -> nn.Module:
    """The config's detector: seeded init, spread head, eval mode, ``cfg`` and class names."""
    cfg = Config.fromfile(str(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    spread_head(model, seed)
    model.cfg = cfg
    classes = cfg.get('test_dataloader', {}).get('dataset', {}).get('metainfo', {}).get(
        'classes')
    model.dataset_meta = {'classes': tuple(classes)} if classes else None
    return model.eval()
