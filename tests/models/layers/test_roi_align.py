"""Multi-level RoIAlign: the CPU kernels equal torchvision's roi_align (forward and backward),
whatever the thread count, the level layout or the RoIs' placement."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align

from codetr.models.layers.roi_align import multi_level_roi_align, resolve_backend

SCALES = [1 / 8, 1 / 16, 1 / 32]


@pytest.fixture(scope='module', autouse=True)
def built():
    if resolve_backend([torch.zeros(1, 1, 1, 1)]) != 'cpp':
        pytest.fail('the roi_align CPU kernels did not build')  # a compiler is required here


def pyramid(dtype: torch.dtype = torch.float64, batch: int = 2, channels: int = 5):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(batch, channels, h, w, generator=gen, dtype=dtype).requires_grad_()
            for h, w in ((20, 24), (10, 12), (5, 6))]


def random_rois(num: int, batch: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """RoIs over a 160 x 190 image, some partly or wholly off it, one degenerate."""
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(num, 2, generator=gen) * 200 - 20
    wh = torch.rand(num, 2, generator=gen) * 120
    idx = torch.randint(0, batch, (num, 1), generator=gen).double()
    rois = torch.cat([idx, xy, xy + wh], 1).double()
    rois[0, 3] = rois[0, 1] - 4  # negative width
    rois[1, 1:] = torch.tensor([300., 300., 340., 330.])  # entirely outside the map
    return rois, torch.randint(0, 3, (num,), generator=gen)


@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [0, 2])
def test_equals_torchvision_forward_and_backward(aligned: bool, sampling_ratio: int):
    feats = pyramid()
    rois, levels = random_rois(30)
    args = (rois, levels, (7, 6), SCALES, sampling_ratio, aligned)
    out = multi_level_roi_align(feats, *args, backend='cpp')
    ref = multi_level_roi_align(feats, *args, backend='torchvision')
    assert out.shape == (30, 5, 7, 6)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, feats, grad)
    theirs = torch.autograd.grad(ref, feats, grad)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_single_level_matches_torchvision_call_in_float32():
    feats = pyramid(torch.float32)[0]
    rois, _ = random_rois(12)
    rois = rois.float()
    out = multi_level_roi_align([feats], rois, torch.zeros(12, dtype=torch.long), (7, 7),
                                [0.25], 0, True)
    torch.testing.assert_close(out, roi_align(feats, rois, (7, 7), 0.25, 0, True),
                               rtol=1e-5, atol=1e-5)


def test_gradcheck_and_unused_levels_get_zero_gradients():
    feats = [f.detach()[:1, :1].clone().requires_grad_() for f in pyramid()]
    rois, _ = random_rois(4)
    rois[:, 0] = 0
    levels = torch.tensor([0, 0, 2, 0])  # level 1 pools nothing
    torch.autograd.gradcheck(
        lambda *f: multi_level_roi_align(f, rois, levels, (3, 2), SCALES, 2, True), feats)
    out = multi_level_roi_align(feats, rois, levels, (3, 2), SCALES, 2, True)
    grads = torch.autograd.grad(out.sum(), feats)
    assert grads[1].abs().sum() == 0 and grads[0].abs().sum() > 0


def test_same_result_for_any_thread_count():
    feats = pyramid(torch.float32, channels=16)
    rois, levels = random_rois(40)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            out = multi_level_roi_align(feats, rois, levels, (7, 7), SCALES, 0, True)
            results.append((out, torch.autograd.grad(out.square().sum(), feats)))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))


def test_no_rois_and_bfloat16():
    feats = pyramid(torch.float32)
    empty = torch.zeros(0, 5)
    out = multi_level_roi_align(feats, empty, torch.zeros(0, dtype=torch.long), (7, 7),
                                SCALES)
    assert out.shape == (0, 5, 7, 7)
    assert all(g.abs().sum() == 0 for g in torch.autograd.grad(out.sum(), feats))
    rois, levels = random_rois(6)
    half = [f.detach().bfloat16() for f in feats]
    low = multi_level_roi_align(half, rois.float(), levels, (7, 7), SCALES)
    assert low.dtype == torch.bfloat16
    full = multi_level_roi_align([h.float() for h in half], rois.float(), levels, (7, 7),
                                 SCALES)
    torch.testing.assert_close(low.float(), full, rtol=1e-2, atol=1e-2)


def test_bad_inputs_say_what_is_wrong():
    feats = pyramid()
    rois, levels = random_rois(3)
    with pytest.raises(ValueError, match='spatial scales'):
        multi_level_roi_align(feats, rois, levels, (7, 7), SCALES[:2])
    with pytest.raises(ValueError, match=r'\(K, 5\)'):
        multi_level_roi_align(feats, rois[:, :4], levels, (7, 7), SCALES)
    bad = rois.clone()
    bad[0, 0] = 5
    with pytest.raises(RuntimeError, match='batch index 5'):
        multi_level_roi_align(feats, bad, levels, (7, 7), SCALES)
    with pytest.raises(ValueError, match='not one of'):
        multi_level_roi_align(feats, rois, levels, (7, 7), SCALES, backend='mmcv')
