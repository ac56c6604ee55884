"""tools/model_converters/swin_to_codetr.py: an MMDetection-layout file in, codetr names out,
with the architecture read back from the shapes."""
import importlib.util

import pytest
import torch

from codetr.models.backbones.swin import SwinTransformer
from codetr.models.converters import CheckpointConversionError, codetr_to_mmdet

from ..conftest import ROOT

TINY = dict(embed_dims=16, depths=(2, 2, 1, 1), num_heads=(1, 2, 2, 4), window_size=4,
            mlp_ratio=2, out_indices=(1, 2, 3))


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        'swin_to_codetr', ROOT / 'tools' / 'model_converters' / 'swin_to_codetr.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


def test_mmdet_detector_file_converts_and_reports_its_architecture(tmp_path):
    torch.manual_seed(0)
    source = SwinTransformer(**TINY)
    src, dst = tmp_path / 'port.pth', tmp_path / 'codetr.pth'
    state = {f'backbone.{k}': v for k, v in codetr_to_mmdet(source.state_dict()).items()}
    state['query_head.cls_branches.0.weight'] = torch.zeros(3, 4)  # not read: not backbone.
    torch.save({'state_dict': state, 'meta': {}}, src)
    args = tool.main([str(src), str(dst)])
    assert args == dict(in_channels=3, embed_dims=16, patch_size=4, depths=(2, 2, 1, 1),
                        num_heads=(1, 2, 2, 4), window_size=4, mlp_ratio=2.0, qkv_bias=True,
                        patch_norm=True, out_indices=(1, 2, 3))
    written = torch.load(dst, weights_only=True)['state_dict']
    own = source.state_dict()
    assert written.keys() == {f'backbone.{k}' for k in own}
    assert all(torch.equal(written[f'backbone.{k}'], v) for k, v in own.items())


def test_a_resnet_file_is_refused_with_its_keys(tmp_path):
    src = tmp_path / 'r50.pth'
    torch.save({'conv1.weight': torch.zeros(1), 'fc.bias': torch.zeros(1)}, src)
    with pytest.raises(CheckpointConversionError, match='conv1.weight'):
        tool.main([str(src), str(tmp_path / 'out.pth')])
