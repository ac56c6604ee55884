"""ResNet: shapes, torchvision / MMDetection key layout, freezing, local checkpoints, with_cp."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from mmengine.logging import HistoryBuffer
from torch.nn.modules.batchnorm import _BatchNorm

from codetr.models.backbones import ResNet, load_local_weights, read_checkpoint
from codetr.registry import MODELS


def _reference_keys(shared_dir, prefix: str) -> dict[str, tuple[int, ...]]:
    """``{key without prefix: shape}`` of the MMDetection Co-DINO R50 state-dict listing."""
    table = shared_dir / 'reference' / 'co_dino_5scale_r50_mmdet3_state_dict.tsv'
    keys = {}
    for line in table.read_text().splitlines():
        key, shape = line.split('\t')
        if key.startswith(prefix):
            keys[key[len(prefix):]] = tuple(int(s) for s in shape.strip('()').split(',') if s)
    return keys


@pytest.mark.parametrize('depth, channels', [(18, [64, 128, 256, 512]),
                                             (50, [256, 512, 1024, 2048])])
def test_output_shapes(depth: int, channels: list[int]) -> None:
    model = MODELS.build(dict(type='ResNet', depth=depth)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, c, 64 // s, 64 // s)
                                              for c, s in zip(channels, [4, 8, 16, 32])]
    assert model.out_channels == channels


def test_out_indices_and_num_stages() -> None:
    model = ResNet(depth=18, num_stages=3, out_indices=(1, 2)).eval()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 128, 8, 8), (1, 256, 4, 4)]
    assert not hasattr(model, 'layer4')
    with pytest.raises(ValueError, match='out_indices'):
        ResNet(depth=18, num_stages=3, out_indices=(3,))
    with pytest.raises(ValueError, match='depth'):
        ResNet(depth=42)


@pytest.mark.parametrize('depth', [18, 50])
def test_keys_match_torchvision(depth: int) -> None:
    reference = getattr(torchvision.models, f'resnet{depth}')().state_dict()
    ours = ResNet(depth=depth).state_dict()
    expected = {k: tuple(v.shape) for k, v in reference.items() if not k.startswith('fc.')}
    assert {k: tuple(v.shape) for k, v in ours.items()} == expected


def test_keys_match_mmdet_codino_r50(shared_dir) -> None:
    expected = _reference_keys(shared_dir, 'backbone.')
    assert len(expected) == 318
    ours = {k: tuple(v.shape) for k, v in ResNet(depth=50).state_dict().items()}
    assert ours == expected


def test_frozen_stages_and_frozen_norm() -> None:
    model = ResNet(depth=18, frozen_stages=1)
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    assert not grads['conv1.weight'] and not grads['layer1.1.conv2.weight']
    assert grads['layer2.0.conv1.weight'] and grads['layer4.1.conv2.weight']
    # norm_cfg requires_grad=False (the default) freezes every norm's affine parameters
    assert not any(v for k, v in grads.items() if '.bn' in k or 'downsample.1' in k)

    trainable_norm = ResNet(depth=18, frozen_stages=1,
                            norm_cfg=dict(type='BN', requires_grad=True))
    grads = {name: p.requires_grad for name, p in trainable_norm.named_parameters()}
    assert grads['layer2.0.bn1.weight'] and not grads['layer1.0.bn1.weight']
    assert not grads['bn1.weight']

    nothing_frozen = ResNet(depth=18, frozen_stages=-1, norm_cfg=dict(type='BN'))
    assert all(p.requires_grad for p in nothing_frozen.parameters())


def _bn_stats(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()
            if 'running_' in k or 'num_batches' in k}


def test_norm_eval_keeps_running_stats() -> None:
    model = ResNet(depth=18).train()
    assert all(not m.training for m in model.modules() if isinstance(m, _BatchNorm))
    assert model.layer2.training  # only the norms are switched off
    before = _bn_stats(model)
    model(torch.randn(2, 3, 64, 64))
    after = _bn_stats(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_without_norm_eval_only_frozen_stages_keep_stats() -> None:
    model = ResNet(depth=18, frozen_stages=1, norm_eval=False).train()
    before = _bn_stats(model)
    model(torch.randn(2, 3, 64, 64))
    after = _bn_stats(model)
    assert torch.equal(before['bn1.running_mean'], after['bn1.running_mean'])
    assert torch.equal(before['layer1.0.bn1.running_var'], after['layer1.0.bn1.running_var'])
    assert not torch.equal(before['layer2.0.bn1.running_mean'], after['layer2.0.bn1.running_mean'])
    assert after['layer2.0.bn1.num_batches_tracked'].item() == 1


def _assert_same_weights(model: torch.nn.Module, reference: dict[str, torch.Tensor]) -> None:
    ours = model.state_dict()
    for key, value in ours.items():
        assert torch.equal(value, reference[key]), key


def test_load_torchvision_state_dict(tmp_path) -> None:
    torch.manual_seed(0)
    source = torchvision.models.resnet18().state_dict()  # includes fc.*, dropped silently
    source['bn1.running_mean'] += 0.5  # a buffer too must be loaded
    path = tmp_path / 'resnet18.pth'
    torch.save(source, path)
    model = ResNet(depth=18, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    _assert_same_weights(model, source)
    assert model.is_init


def test_load_mmengine_detector_checkpoint(tmp_path) -> None:
    source = ResNet(depth=18, zero_init_residual=False).state_dict()
    # released detector checkpoints carry numpy scalars and arrays in their meta
    checkpoint = {'state_dict': {**{f'backbone.{k}': v for k, v in source.items()},
                                 'neck.convs.0.conv.weight': torch.ones(1)},
                  'meta': {'epoch': 3, 'lr': np.float64(2e-4), 'hist': np.arange(3)}}
    path = tmp_path / 'epoch_3.pth'
    torch.save(checkpoint, path)
    model = ResNet(depth=18)
    assert not torch.equal(model.layer1[0].bn2.weight, source['layer1.0.bn2.weight'])
    model.init_weights()  # no init_cfg: keeps the random init
    missing, unexpected = load_local_weights(model, path)
    assert missing == [] and unexpected == []
    _assert_same_weights(model, source)


class _Unlisted:
    """A type on no allow-list: weights-only loading must refuse it."""


def test_checkpoint_with_runner_state_loads_and_unknown_objects_are_refused(tmp_path) -> None:
    from codetr.engine.checkpoint import allow_mmengine_checkpoint_types
    allow_mmengine_checkpoint_types()  # done by register_all_modules / importing codetr.engine
    buffer = HistoryBuffer()  # what a Runner's message hub holds next to the weights
    buffer.update(1.5)
    source = ResNet(depth=18).state_dict()
    state = {f'backbone.{k}': v for k, v in source.items()}
    torch.save({'state_dict': state, 'message_hub': {'loss': buffer}}, tmp_path / 'run.pth')
    model = ResNet(depth=18, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'run.pth')))
    model.init_weights()
    _assert_same_weights(model, source)

    torch.save({'state_dict': state, 'meta': {'cfg': _Unlisted()}}, tmp_path / 'odd.pth')
    with pytest.raises(ValueError, match='outside the weights-only allow-list'):
        read_checkpoint(tmp_path / 'odd.pth')


def test_load_reports_missing_and_unexpected(tmp_path) -> None:
    source = ResNet(depth=18).state_dict()
    del source['layer4.1.conv2.weight']
    source['layer5.0.conv1.weight'] = torch.zeros(1)
    path = tmp_path / 'partial.pth'
    torch.save(source, path)
    missing, unexpected = load_local_weights(ResNet(depth=18), path)
    assert missing == ['layer4.1.conv2.weight'] and unexpected == ['layer5.0.conv1.weight']

    torch.save({'head.weight': torch.zeros(1)}, tmp_path / 'other.pth')
    with pytest.raises(ValueError, match='shares no parameter name'):
        load_local_weights(ResNet(depth=18), tmp_path / 'other.pth')


def test_missing_or_remote_checkpoint_is_refused(tmp_path) -> None:
    missing = tmp_path / 'nope.pth'
    model = ResNet(depth=18, init_cfg=dict(type='Pretrained', checkpoint=str(missing)))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        model.init_weights()
    remote = ResNet(depth=18, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet18'))
    with pytest.raises(ValueError, match='never downloads'):
        remote.init_weights()


def test_with_cp_same_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    plain = ResNet(depth=18, frozen_stages=1).train()
    checkpointed = ResNet(depth=18, frozen_stages=1, with_cp=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    outs = [model(x) for model in (plain, checkpointed)]
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for out in outs:
        sum(o.square().mean() for o in out).backward()
    grads = [{k: p.grad for k, p in m.named_parameters() if p.requires_grad}
             for m in (plain, checkpointed)]
    assert grads[0].keys() == grads[1].keys() and 'layer2.0.conv1.weight' in grads[0]
    for key in grads[0]:
        torch.testing.assert_close(grads[0][key], grads[1][key], rtol=1e-5, atol=1e-7)
