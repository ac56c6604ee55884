"""The fused CPU kernels (``cpp`` backend) against the brute-force loop and the pytorch backend."""
import pytest
import torch
import torch.utils.checkpoint

from codetr.models.layers.ms_deform_attn import (
    MultiScaleDeformableAttention,
    ms_deform_attn,
    ms_deform_attn_pytorch,
    resolve_backend,
)
from codetr.models.layers.ms_deform_attn import op as msda_op
from codetr.models.layers.ms_deform_attn.cpp_backend import load_extension, ms_deform_attn_cpp
from codetr.registry import MODELS

from .test_ms_deform_attn import brute_force, make_inputs


@pytest.fixture(scope='module', autouse=True)
def built() -> None:
    load_extension()  # compiles once per machine (cached); a failure here is a real failure


# dims 5 and 8: no full 16-lane vector (float32) / 8-lane vector (float64); 24 and 40: a tail.
@pytest.mark.parametrize('dims', [5, 8, 24, 40])
def test_forward_matches_brute_force(dims):
    inputs = make_inputs([[3, 4], [2, 2], [1, 3]], dims=dims, queries=6, points=3)
    out = ms_deform_attn_cpp(*inputs)
    assert out.shape == (2, 6, 2 * dims) and out.dtype == torch.float64
    torch.testing.assert_close(out, brute_force(*inputs), rtol=0, atol=1e-12)


@pytest.mark.parametrize('dims', [5, 24])
def test_gradients_equal_pytorch_backend_and_gradcheck(dims):
    value, shapes, starts, locs, weights = make_inputs([[3, 4], [2, 2]], dims=dims, seed=3)
    leaves = [t.clone().requires_grad_() for t in (value, locs, weights)]
    grad_out = torch.randn(2, 5, 2 * dims, dtype=torch.float64)
    ours = torch.autograd.grad(ms_deform_attn_cpp(leaves[0], shapes, starts, *leaves[1:]),
                               leaves, grad_out)
    ref = torch.autograd.grad(ms_deform_attn_pytorch(leaves[0], shapes, starts, *leaves[1:]),
                              leaves, grad_out)
    for name, a, b in zip(('value', 'locations', 'weights'), ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=name)
    assert torch.autograd.gradcheck(
        lambda v, loc, w: ms_deform_attn_cpp(v, shapes, starts, loc, w), leaves)


def test_points_on_edges_and_off_every_map():
    value, shapes, starts, locs, weights = make_inputs([[2, 3]], queries=4, points=4)
    locs[:, 0] = 0.0  # top-left corner of the map: only corner (0, 0) has weight
    locs[:, 1] = 1.0  # bottom-right corner
    locs[:, 2, :, :, :2] = -0.75  # x = -1.25 px: every corner is off the map
    locs[:, 2, :, :, 2:] = 1.5
    out = ms_deform_attn_cpp(value, shapes, starts, locs, weights)
    torch.testing.assert_close(out, brute_force(value, shapes, starts, locs, weights),
                               rtol=0, atol=1e-12)
    leaves = [t.clone().requires_grad_() for t in (value, locs, weights)]
    out = ms_deform_attn_cpp(leaves[0], shapes, starts, *leaves[1:])
    out[:, 2].sum().backward()  # the off-map query reads nothing and passes no gradient
    assert leaves[0].grad.abs().sum() == 0
    assert leaves[1].grad[:, 2, :, :, :2].abs().sum() == 0


def test_float32_matches_pytorch_backend_and_needs_no_grad():
    inputs = make_inputs([[5, 6], [3, 3], [2, 1]], dims=32, heads=4, queries=20,
                         dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(ms_deform_attn_cpp(*inputs), ms_deform_attn_pytorch(*inputs),
                                   rtol=1e-5, atol=1e-6)


def test_result_does_not_depend_on_thread_count():
    inputs = make_inputs([[7, 9], [4, 5]], dims=16, heads=4, queries=50, dtype=torch.float32)
    leaves = [t.clone().requires_grad_() for t in (inputs[0], inputs[3], inputs[4])]
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            out = ms_deform_attn_cpp(leaves[0], inputs[1], inputs[2], *leaves[1:])
            grads = torch.autograd.grad(out, leaves, torch.ones_like(out))
            results.append((out.detach(), *grads))
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*results):
        assert torch.equal(one, two)


def test_python_list_shapes_and_bad_inputs():
    value, shapes, starts, locs, weights = make_inputs([[3, 4], [2, 2]])
    torch.testing.assert_close(ms_deform_attn_cpp(value, shapes.tolist(), starts.tolist(), locs,
                                                  weights),
                               ms_deform_attn_cpp(value, shapes, starts, locs, weights))
    with pytest.raises(RuntimeError, match='runs past'):
        ms_deform_attn_cpp(value, shapes, torch.tensor([0, 15]), locs, weights)
    with pytest.raises(RuntimeError, match='must be Double for a Double value'):
        torch.ops.codetr_msda.forward(value, shapes, starts, locs.float(), weights)


def test_bfloat16_values_are_read_as_they_are_and_summed_in_float32():
    value, shapes, starts, locs, weights = make_inputs([[3, 4], [2, 2]], dims=24,
                                                       dtype=torch.float32)
    value16 = value.bfloat16().requires_grad_()
    rounded = value16.detach().float().requires_grad_()  # the same numbers in float32
    locs, weights = locs.requires_grad_(), weights.requires_grad_()
    out16 = ms_deform_attn_cpp(value16, shapes, starts, locs, weights)
    out32 = ms_deform_attn_cpp(rounded, shapes, starts, locs, weights)
    assert out16.dtype == torch.bfloat16
    # only the final rounding of the float32 sums to bfloat16 differs
    torch.testing.assert_close(out16.float(), out32.bfloat16().float(), rtol=0, atol=0)
    grad_out = torch.randn(out32.shape).bfloat16().float()
    grads16 = torch.autograd.grad(out16, (value16, locs, weights), grad_out.bfloat16())
    grads32 = torch.autograd.grad(out32, (rounded, locs, weights), grad_out)
    assert grads16[0].dtype == torch.bfloat16 and grads16[1].dtype == torch.float32
    torch.testing.assert_close(grads16[0].float(), grads32[0].bfloat16().float(), rtol=0,
                               atol=0)
    torch.testing.assert_close(grads16[1], grads32[1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grads16[2], grads32[2], rtol=1e-6, atol=1e-6)
    half = ms_deform_attn_cpp(value.half(), shapes, starts, locs, weights)  # via float32
    assert half.dtype == torch.float16


def test_auto_picks_cpp_on_cpu_and_autocast_keeps_bfloat16_values(monkeypatch):
    monkeypatch.delenv(msda_op.ENV_VAR, raising=False)
    monkeypatch.setattr(msda_op, '_AUTO_CHOICE', {})
    assert resolve_backend(torch.device('cpu')) == 'cpp'
    inputs = make_inputs([[3, 4], [2, 2]], dims=16, dtype=torch.float32)
    value16 = inputs[0].bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = ms_deform_attn(value16, *inputs[1:])
        assert msda_op.as_sampled(value16, 'cpp') is value16
        assert msda_op.as_sampled(value16, 'pytorch').dtype == torch.float32
    assert msda_op.as_sampled(value16, 'pytorch') is value16  # no autocast: no cast
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, ms_deform_attn_cpp(value16, *inputs[1:]), rtol=0, atol=0)


def test_module_with_cpp_backend_equals_pytorch_backend():
    cfg = dict(type='MultiScaleDeformableAttention', embed_dims=32, num_heads=4, num_levels=2,
               num_points=3, dropout=0.0)
    torch.manual_seed(0)
    ours: MultiScaleDeformableAttention = MODELS.build({**cfg, 'backend': 'cpp'})
    ref: MultiScaleDeformableAttention = MODELS.build({**cfg, 'backend': 'pytorch'})
    ref.load_state_dict(ours.state_dict())
    shapes = torch.tensor([[6, 5], [3, 3]])
    query = torch.randn(2, 39, 32)
    refs = torch.rand(2, 39, 2, 2)
    outs, grads = [], []
    for module in (ours, ref):
        module.zero_grad()
        out = module(query, reference_points=refs, spatial_shapes=shapes)
        out.pow(2).sum().backward()
        outs.append(out)
        grads.append({n: p.grad.clone() for n, p in module.named_parameters()})
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 8
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5,
                                   msg=name)


def test_auto_choice_made_inside_checkpointed_forward(monkeypatch):
    # The first deformable attention of a model runs inside an activation-checkpointed
    # encoder layer: the backend's smoke test must not be caught by the checkpoint's hooks.
    monkeypatch.delenv(msda_op.ENV_VAR, raising=False)
    monkeypatch.setattr(msda_op, '_AUTO_CHOICE', {})
    inputs = make_inputs([[3, 4], [2, 2]], dims=8, dtype=torch.float32)
    value = inputs[0].clone().requires_grad_()

    def layer(v):
        return ms_deform_attn(v, *inputs[1:]).sum()

    torch.utils.checkpoint.checkpoint(layer, value, use_reentrant=False).backward()
    assert msda_op._AUTO_CHOICE == {'cpu': 'cpp'}
    expected = torch.autograd.grad(ms_deform_attn_pytorch(value, *inputs[1:]).sum(), value)[0]
    torch.testing.assert_close(value.grad, expected, rtol=1e-5, atol=1e-6)
