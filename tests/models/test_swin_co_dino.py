"""A tiny Swin Co-DINO (configs/tests/co_dino_swin_tiny.py: K = 2 aux heads, checkpointed Swin
blocks) trains a step with a gradient on every parameter, and its whole state dict, with the
backbone in MMDetection's layout (as in the Co-DETR port's Swin checkpoints), converts back."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.structures import InstanceData

from codetr.models.converters import (
    CheckpointConversionError,
    codetr_to_mmdet,
    convert_official,
    is_official_layout,
)
from codetr.registry import MODELS
from codetr.structures import DetDataSample

CONFIG = Path(__file__).resolve().parents[2] / 'configs' / 'tests' / 'co_dino_swin_tiny.py'


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(CONFIG).model)
    model.init_weights()
    return model


def batch(sizes: list[tuple[int, int]], num_gt: int = 3) -> dict:
    """uint8 images (sizes not multiples of the window) with random boxes of classes 0..7."""
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for i, (h, w) in enumerate(sizes):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        xy = torch.rand(num_gt, 2, generator=g) * torch.tensor([w / 2, h / 2])
        wh = 12 + torch.rand(num_gt, 2, generator=g) * torch.tensor([w / 3, h / 3])
        sample = DetDataSample(metainfo=dict(img_id=i, img_shape=(h, w), ori_shape=(h, w),
                                             scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(bboxes=torch.cat([xy, xy + wh], 1),
                                           labels=torch.randint(0, 8, (num_gt,), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def test_one_training_step_reaches_every_parameter(model):
    backbone = model.backbone
    assert type(backbone).__name__ == 'SwinTransformer'
    assert all(stage.with_cp for stage in backbone.layers)
    model.train()
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='AdamW', lr=1e-3)))
    data = model.data_preprocessor(batch([(100, 116), (84, 92)]), training=True)
    losses = model(**data, mode='loss')
    assert {'loss_cls', 'atss.loss_cls', 'rcnn.loss_rpn_cls', 'atss.pos.loss_cls'} <= set(losses)
    before = backbone.layers[0].blocks[1].attn.qkv.weight.detach().clone()
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    optim.zero_grad()
    total.backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, f'parameters without a finite gradient: {missing}'
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters()
               if n.startswith('backbone.'))
    optim.step()
    assert not torch.equal(before, backbone.layers[0].blocks[1].attn.qkv.weight)


def test_port_layout_checkpoint_converts_for_the_whole_detector(model):
    own = model.state_dict()
    backbone = {k.removeprefix('backbone.'): v for k, v in own.items()
                if k.startswith('backbone.')}
    port = {f'backbone.{k}': v for k, v in codetr_to_mmdet(backbone).items()}
    port.update({k: v for k, v in own.items() if not k.startswith('backbone.')})
    assert is_official_layout(port)
    converted = convert_official(port, model)
    assert converted.keys() == own.keys()
    assert all(torch.equal(converted[k], v) for k, v in own.items())


def test_other_class_count_is_refused_or_left_out(model):
    """An Objects365 checkpoint on an 80-class model: the class layers' shapes differ. By
    default that is an error naming the key; skip_mismatched leaves exactly those out."""
    own = model.state_dict()
    other = dict(own)
    wrong = [k for k in own if k.startswith('query_head.cls_branches.')]
    for key in wrong:
        other[key] = torch.zeros(365, *own[key].shape[1:])
    other['backbone.layers.0.blocks.0.attn.relative_position_index'] = \
        model.backbone.layers[0].blocks[0].attn.relative_position_index  # official buffer
    with pytest.raises(CheckpointConversionError, match=r'cls_branches\.0\.weight.*\(365'):
        convert_official(other, model)
    converted = convert_official(other, model, skip_mismatched=True)
    assert set(own) - set(converted) == set(wrong)
    assert all(torch.equal(converted[k], own[k]) for k in converted)
