"""Group norm with float64 statistics: same result as nn.GroupNorm in PyTorch, and float32
accuracy where ONNX Runtime's InstanceNormalization loses digits."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from codetr.deployment.norms import ExportableGroupNorm, swap_group_norm

from .helpers import EXPORT_EXTRA


def _norm() -> nn.GroupNorm:
    torch.manual_seed(0)
    norm = nn.GroupNorm(4, 16).eval()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    return norm


def _large_mean_input(height: int, width: int) -> torch.Tensor:
    """Features with a large common offset: the case a one-pass float32 variance gets wrong."""
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(2, 16, height, width, generator=gen) * 3 + 100
            + torch.randn(2, 16, 1, 1, generator=gen) * 5)


def test_matches_group_norm_and_keeps_shape_and_dtype():
    norm = _norm()
    x = _large_mean_input(7, 9)
    with torch.no_grad():
        exact = norm.double()(x.double())
        norm.float()
        got = ExportableGroupNorm(norm)(x)
        torch_out = norm(x)
    assert got.shape == x.shape and got.dtype == torch.float32
    # closer to float64 than PyTorch's own float32 kernel is, or as close
    err = (got.double() - exact).abs().max()
    assert err < 2e-6 and err <= (torch_out.double() - exact).abs().max() * 1.5


def test_swap_replaces_every_group_norm_and_nothing_else():
    model = nn.Sequential(nn.Conv2d(3, 16, 1), _norm(), nn.Sequential(_norm(), nn.ReLU()),
                          nn.LayerNorm(16))
    assert swap_group_norm(model) == 2
    assert isinstance(model[1], ExportableGroupNorm) and isinstance(model[2][0],
                                                                     ExportableGroupNorm)
    assert isinstance(model[3], nn.LayerNorm)
    assert swap_group_norm(model) == 0  # idempotent: the wrapped norms are not swapped again


@pytest.mark.slow
def test_onnx_runtime_keeps_float32_accuracy_on_a_large_level(tmp_path):
    """A 100 x 167 level (800 x 1333 input, stride 8) with mean ~100: ONNX Runtime's
    InstanceNormalization (nn.GroupNorm exported as is) is ~10x further from float64 than
    PyTorch; the swapped norm is as close as PyTorch."""
    ort = pytest.importorskip('onnxruntime', reason=EXPORT_EXTRA)
    pytest.importorskip('onnxscript', reason=EXPORT_EXTRA)
    norm = _norm()
    x = _large_mean_input(100, 167)
    with torch.no_grad():
        exact = norm.double()(x.double()).numpy()
        norm.float()
        torch_err = abs(norm(x).numpy() - exact).max()
    errors = {}
    for name, module in (('plain', norm), ('swapped', ExportableGroupNorm(norm))):
        proto = torch.onnx.export(module.eval(), (x,), dynamo=True, opset_version=18).model_proto
        session = ort.InferenceSession(proto.SerializeToString(),
                                       providers=['CPUExecutionProvider'])
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        errors[name] = abs(out - exact).max()
    assert errors['swapped'] <= 1.5 * torch_err < errors['plain'] / 3, (errors, torch_err)
