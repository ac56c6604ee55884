"""A tiny synthetic set and a quick-start Co-DINO config reading it at 64 px, shared by the
tests of the paper's analyses (discriminability, instability, head conflict)."""
from __future__ import annotations

from pathlib import Path

import torch
from mmengine.config import Config

from codetr.analysis.model_inputs import build_model
from codetr.datasets.synthetic import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / 'configs' / 'quickstart' / 'co_dino_r18_k2_quickstart_synthetic.py'


def write_tiny_config(root: Path, num_images: int = 2, aux_heads: str | None = None) -> Path:
    """``num_images`` synthetic val images (64..80 px) tested at 64 px by the quick-start
    Co-DINO (K = 2), or with ``aux_heads`` (a config expression) in place of its heads."""
    make_synthetic_dataset(root / 'data', 0, num_images, seed=3, min_size=64, max_size=80)
    heads = '' if aux_heads is None else f'model = dict(aux_heads={aux_heads})\n'
    config = root / 'tiny_quickstart.py'
    config.write_text(f"""_base_ = [{str(QUICKSTART)!r}]
{heads}_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor')),
]
test_dataloader = dict(dataset=dict(data_root={str(root / 'data') + '/'!r}, pipeline=_pipeline))
""")
    return config


def save_checkpoints(cfg: Config, work_dir: Path, seeds: dict[int, int]) -> None:
    """``work_dir/epoch_N.pth`` for each ``{N: seed}``: a from-scratch model of ``cfg``
    (weights drawn with ``seed``), saved as the training runner saves it (``state_dict``,
    ``meta.epoch``, ``meta.cfg``)."""
    text = cfg.pretty_text  # formatting the config takes seconds: once
    for epoch, seed in seeds.items():
        torch.manual_seed(seed)
        model = build_model(cfg)
        torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=epoch, cfg=text)),
                   work_dir / f'epoch_{epoch}.pth')
