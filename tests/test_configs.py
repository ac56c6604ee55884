"""Every shipped config (outside ``configs/_base_``) loads, and its model builds."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from codetr.registry import DATASETS, MODELS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / 'configs').rglob('*.py') if '_base_' not in p.parts)


def _config_id(path: Path) -> str:
    return str(path.relative_to(ROOT / 'configs'))


def test_configs_are_found():
    names = {_config_id(p) for p in CONFIGS}
    assert {'baselines/dino_5scale_r50_8xb2_1x_coco.py',
            'baselines/deformable_detr_pp_r50_8xb2_1x_coco.py',
            'quickstart/dino_r18_quickstart_synthetic.py',
            'quickstart/deformable_detr_pp_r18_quickstart_synthetic.py'} <= names


def _dataset_classes(cfg: Config) -> tuple[str, ...]:
    """The class names the training set will have: the config's metainfo, else the
    dataset class's own (empty when it reads them from the annotation file). Wrappers
    (LVIS's ClassBalancedDataset) are looked through."""
    dataset = cfg.train_dataloader.dataset
    while 'dataset' in dataset:
        dataset = dataset.dataset
    metainfo = dataset.get('metainfo') or DATASETS.get(dataset.type).METAINFO
    return tuple(metainfo.get('classes', ()))


# Configs that differ only outside `model` (schedule, data), or in the backbone's stochastic
# depth rate (which changes no parameter: the Swin 1x / 2x / 3x configs), share one build: the
# model part of `key` was built and checked already.
_BUILT: dict[str, tuple[str, int, int | None]] = {}
# Backbone types whose first real build initialised over HEAVY_PARAMS weights (Swin-B / L,
# ViT-L: 90-300M, seconds of random numbers): later models with a backbone of that type
# (other sizes, data, heads, encoder depth) are built on the meta device, which checks their
# structure, names and parameter counts without filling the weights again (a Swin-L Co-DINO:
# ~3.5 s real, ~1 s meta). Initialisation itself is covered by that first build and by the
# backbone's own tests.
HEAVY_PARAMS = 50e6
_HEAVY_BACKBONES: set[str] = set()


def _model_key(cfg: Config) -> str:
    model = cfg.model.to_dict()
    model.get('backbone', {}).pop('drop_path_rate', None)
    return repr(model)


def _build_summary(cfg: Config, name: str) -> tuple[str, int, int | None]:
    """(model type, parameter count, query-head classes) of ``cfg.model``, built once."""
    key = _model_key(cfg)
    if key not in _BUILT:
        backbone = cfg.model.get('backbone', {}).get('type')
        device = 'meta' if backbone in _HEAVY_BACKBONES else 'cpu'
        start = time.perf_counter()
        with torch.device(device):
            model = MODELS.build(cfg.model)
        seconds = time.perf_counter() - start
        # Swin-B / Swin-L / ViT-L: ~100-300M parameters
        limit = 30 if any(big in name for big in ('swin_b', 'swin_l', 'vit_l')) else 10
        assert seconds < limit, f'building {name} took {seconds:.1f} s'
        if device == 'cpu' and hasattr(model, 'backbone') and sum(
                p.numel() for p in model.backbone.parameters()) > HEAVY_PARAMS:
            _HEAVY_BACKBONES.add(backbone)
        head = getattr(model, 'query_head', None)
        _BUILT[key] = (type(model).__name__, sum(p.numel() for p in model.parameters()),
                       getattr(head, 'num_classes', None))
    return _BUILT[key]


@pytest.mark.parametrize('path', CONFIGS, ids=_config_id)
def test_config_builds_its_model(path: Path):
    cfg = Config.fromfile(path)
    assert cfg.default_scope == 'codetr'
    model_type, num_params, num_classes = _build_summary(cfg, path.name)
    assert model_type == cfg.model.type
    assert num_params > 1e6
    classes = _dataset_classes(cfg)
    if classes:  # a mismatch trains silently on the wrong number of logits
        assert num_classes == len(classes)


@pytest.mark.parametrize('path', [p for p in CONFIGS if 'quickstart' in p.parts],
                         ids=_config_id)
def test_quickstart_configs_train_on_the_synthetic_set_from_scratch(path: Path):
    cfg = Config.fromfile(path)
    assert cfg.train_dataloader.dataset.data_root == 'data/synthetic/'
    assert cfg.model.backbone.init_cfg is None  # nothing to download
    assert cfg.train_cfg.val_interval == 1
    assert cfg.default_hooks.checkpoint.interval == 1


# Port keys that belong to the aux branches (heads, positive-query projections, the extra
# pyramid level), which a K = 0 model does not have.
AUX_KEY_PARTS = ('rpn_head.', 'roi_head.', 'bbox_head.', 'query_head.downsample.',
                 'query_head.transformer.aux_pos_trans')


def test_dino_baseline_state_dict_follows_the_port(shared_dir: Path):
    """Same names and shapes as the MMDetection port's Co-DINO R50, minus its aux branches,
    so official checkpoints load by name."""
    ref = {}
    tsv = shared_dir / 'reference' / 'co_dino_5scale_r50_mmdet3_state_dict.tsv'
    for line in tsv.read_text().splitlines():
        key, shape = line.split('\t')[:2]
        ref[key] = tuple(int(v) for v in shape.strip('()').split(',') if v.strip())
    cfg = Config.fromfile(ROOT / 'configs' / 'baselines' / 'dino_5scale_r50_8xb2_1x_coco.py')
    ours = {k: tuple(v.shape) for k, v in MODELS.build(cfg.model).state_dict().items()}
    assert {k: ref.get(k) for k in ours} == ours
    left_out = [k for k in ref if k not in ours]
    assert left_out and all(any(part in k for part in AUX_KEY_PARTS) for k in left_out)
