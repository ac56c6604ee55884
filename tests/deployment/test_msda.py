"""The export formulation of the deformable attention and the size-only padding masks give
what the library computes."""
from __future__ import annotations

import copy

import pytest
import torch

from codetr.deployment.graph import padding_masks
from codetr.deployment.msda import (
    ExportableMSDA,
    ms_deform_attn_grid_sample,
    swap_deformable_attention,
)
from codetr.models.layers.ms_deform_attn import MultiScaleDeformableAttention, ms_deform_attn
from codetr.models.query_heads import level_padding_masks
from codetr.structures import DetDataSample

SHAPES = [(12, 10), (6, 5), (3, 3)]


def _attention(seed: int = 0) -> MultiScaleDeformableAttention:
    torch.manual_seed(seed)
    attn = MultiScaleDeformableAttention(embed_dims=32, num_heads=4, num_levels=3,
                                         num_points=2, dropout=0.0)
    with torch.no_grad():  # offsets and weights away from their initial grid
        attn.sampling_offsets.weight.normal_(0, 0.3)
        attn.attention_weights.weight.normal_(0, 0.3)
    return attn.eval()


@pytest.mark.parametrize('ref_dims', [2, 4])
def test_exportable_attention_matches_the_library_module(ref_dims: int):
    attn = _attention()
    num_value = sum(h * w for h, w in SHAPES)
    gen = torch.Generator().manual_seed(1)
    query = torch.randn(2, 7, 32, generator=gen)
    value = torch.randn(2, num_value, 32, generator=gen)
    mask = torch.zeros(2, num_value, dtype=torch.bool)
    mask[1, -20:] = True
    ref = torch.rand(2, 7, 3, ref_dims, generator=gen) * 0.8 + 0.1
    kwargs = dict(query=query, value=value, query_pos=torch.randn(2, 7, 32, generator=gen),
                  key_padding_mask=mask, reference_points=ref)
    with torch.no_grad():
        expected = attn(**kwargs, spatial_shapes=torch.tensor(SHAPES))
        got = ExportableMSDA(attn)(**kwargs, spatial_shapes=SHAPES)
    assert got.shape == (2, 7, 32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - query).abs().max() > 0.1  # the attention changed something


def _level_inputs(locations):
    """(B, Q, H, L, P, 2) locations -> the grid-sample formulation's per-level arguments."""
    batch, queries, heads, levels, points, _ = locations.shape
    grids = [(2 * locations[:, :, :, lv] - 1).permute(0, 2, 3, 1, 4).reshape(
        batch * heads, points, queries, 2) for lv in range(levels)]
    return grids, lambda w: [w[:, :, :, lv].permute(0, 2, 3, 1).reshape(
        batch * heads, 1, points, queries) for lv in range(levels)]


def test_grid_sample_formulation_reads_zeros_outside_and_in_padded_levels():
    """Against the eager kernel: points outside every border (partly and wholly), on the
    outermost half pixel, and a level whose right columns / bottom rows are zeroed padding."""
    gen = torch.Generator().manual_seed(3)
    value = torch.randn(2, sum(h * w for h, w in SHAPES), 2, 4, generator=gen)
    value[1, :120].view(12, 10, 2, 4)[:, 7:] = 0.0  # level 0 of image 1: padded columns
    value[1, 120:150].view(6, 5, 2, 4)[4:] = 0.0  # level 1 of image 1: padded rows
    locations = torch.rand(2, 5, 2, 3, 4, 2, generator=gen) * 1.6 - 0.3
    locations[0, 0, :, :, 0] = torch.tensor([-0.5, 0.5])  # wholly left of the map
    locations[0, 0, :, :, 1] = torch.tensor([0.5, 1.2])  # wholly below
    locations[0, 1, :, :, 0] = torch.tensor([-0.02, 1.03])  # partly outside: half weights
    locations[0, 1, :, :, 1] = torch.tensor([1.0, 0.0])  # the corners themselves
    weights = torch.rand(2, 5, 2, 3 * 4, generator=gen).softmax(-1).view(2, 5, 2, 3, 4)
    spatial = torch.tensor(SHAPES)
    starts = torch.tensor([0, 120, 150])
    expected = ms_deform_attn(value, spatial, starts, locations, weights)
    grids, level_weights = _level_inputs(locations)
    got = ms_deform_attn_grid_sample(value, SHAPES, grids, level_weights(weights))
    assert got.shape == (2, 5, 8)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    size = torch.tensor([[w, h] for h, w in SHAPES], dtype=torch.float)[:, None, :]
    pixel = locations * size - 0.5  # no corner of a point on the map: outside
    outside = ((pixel <= -1) | (pixel >= size)).any(-1)
    assert outside.any() and (~outside).any()
    # only the outside points of query 0 zeroed: its result is the inside points' sum
    inside_only = weights * (~outside).float()
    torch.testing.assert_close(
        got[0, 0], ms_deform_attn(value, spatial, starts, locations, inside_only)[0, 0],
        atol=1e-6, rtol=1e-6)
    assert got[0, 0].abs().max() > 0.01


def test_swap_replaces_every_deformable_attention_and_shares_parameters():
    parent = torch.nn.ModuleList([_attention(0), torch.nn.Sequential(_attention(1))])
    swapped = copy.deepcopy(parent)
    assert swap_deformable_attention(swapped) == 2
    assert isinstance(swapped[0], ExportableMSDA) and isinstance(swapped[1][0], ExportableMSDA)
    assert not any(isinstance(m, MultiScaleDeformableAttention) and
                   not isinstance(p, ExportableMSDA)
                   for p in swapped.modules() for m in p.children())
    assert swapped[0].inner.value_proj is swapped[0].inner.value_proj
    assert sum(p.numel() for p in swapped.parameters()) == sum(
        p.numel() for p in parent.parameters())


@pytest.mark.parametrize('input_hw', [(160, 150), (352, 352), (333, 517), (800, 1199)])
def test_padding_masks_equal_the_heads_interpolated_masks(input_hw):
    """Integer nearest-neighbour rows / columns == F.interpolate's, at ResNet level sizes."""
    height, width = input_hw
    sizes = [(height, width), (height - 37, width - 1), (height // 2 + 1, width - 61)]
    shapes = [(-(-height // s), -(-width // s)) for s in (4, 8, 16, 32)]
    shapes.append((-(-shapes[-1][0] // 2), -(-shapes[-1][1] // 2)))
    samples = [DetDataSample(metainfo=dict(img_shape=size, batch_input_shape=input_hw))
               for size in sizes]
    feats = [torch.zeros(len(sizes), 1, h, w) for h, w in shapes]
    expected = level_padding_masks(feats, samples)
    got = padding_masks(torch.tensor(sizes), input_hw, shapes)
    for e, g in zip(expected, got):
        assert torch.equal(e, g)
    assert got[0][1].any() and not got[0][0].any()  # the full-size image has no padding
