"""Discriminability scores and IoF-IoB curves on hand-made maps, and the encoder / decoder
maps of a from-scratch quick-start Co-DINO."""
from __future__ import annotations

import pytest
import torch
from mmengine.config import Config

from codetr.analysis import decoder_attention as att
from codetr.analysis import discriminability as disc
from codetr.analysis.model_inputs import build_model, iter_images, preprocess
from codetr.models.layers import ms_deform_attn

from .tiny_setup import write_tiny_config


def test_level_score_is_the_channel_norm_over_its_max_or_min_max():
    # locations' channel vectors: (3, 4) -> 5, (0, 0) -> 0, (6, 8) -> 10, (0, 5) -> 5
    level = torch.tensor([[[3., 0.], [6., 0.]], [[4., 0.], [8., 5.]]])
    assert torch.allclose(disc.level_score(level, 'max'), torch.tensor([[0.5, 0.], [1., 0.5]]))
    level[:, 0, 1] = torch.tensor([1., 0.])  # norm 1: min-max (n - 1) / (10 - 1), the default
    assert torch.allclose(disc.level_score(level), torch.tensor([[4 / 9, 0.], [1., 4 / 9]]))
    # no contrast: min-max scores 0; an all-zero map scores 0 either way
    assert torch.equal(disc.level_score(torch.ones(2, 2, 2)), torch.zeros(2, 2))
    # a spread at float-rounding level is no contrast either (not stretched to [0, 1])
    rounding = torch.ones(1, 2, 2) + torch.tensor([[[0., 1e-6], [2e-6, 0.]]])
    assert torch.equal(disc.level_score(rounding), torch.zeros(2, 2))
    assert disc.level_score(rounding + torch.tensor([[[0., 0.], [0., 1e-2]]]))[1, 1] == 1
    assert torch.equal(disc.level_score(torch.zeros(2, 2, 2), 'max'), torch.zeros(2, 2))
    with pytest.raises(ValueError, match='norm'):
        disc.level_score(level, 'l1')


def test_discriminability_averages_the_levels_after_resizing():
    fine = torch.tensor([[[1., 2.], [1., 1.]]])  # eq. 7 scores [[0.5, 1], [0.5, 0.5]]
    coarse = torch.full((1, 1, 1), 7.0)  # one location: score 1 everywhere once resized
    assert torch.allclose(disc.discriminability([fine, coarse], (2, 2), 'max'),
                          torch.tensor([[0.75, 1.0], [0.75, 0.75]]))
    # min-max: fine [[0, 1], [0, 0]], the single location has no contrast: 0
    assert torch.allclose(disc.discriminability([fine, coarse], (2, 2)),
                          torch.tensor([[0.0, 0.5], [0.0, 0.0]]))


def test_foreground_mask_takes_the_pixels_whose_centre_is_inside_a_box():
    mask = disc.foreground_mask(torch.tensor([[1., 0., 3., 1.6], [3.6, 2.4, 4., 3.]]), (3, 4))
    assert mask.tolist() == [[False, True, True, False],
                             [False, True, True, False],
                             [False, False, False, False]]


def test_map_high_exactly_inside_the_boxes_separates_perfectly():
    fg = disc.foreground_mask(torch.tensor([[2., 2., 6., 5.]]), (8, 10))
    curve = disc.IoFIoB()
    curve.update(fg.float(), fg)  # 1 inside, 0 outside
    result = curve.result()
    at = {t: i for i, t in enumerate(result['thresholds'])}
    assert (result['iof'][at[0.5]], result['iob'][at[0.5]], result['bg_above'][at[0.5]]) == (
        1.0, 1.0, 0.0)
    # S = 0: nothing is below it; S = 1: nothing is above it
    assert (result['iof'][at[0.0]], result['iob'][at[0.0]]) == (1.0, 0.0)
    assert (result['iof'][at[1.0]], result['iob'][at[1.0]]) == (0.0, 1.0)
    assert result['auc'] == 1.0
    assert (result['fg_pixels'], result['bg_pixels'], result['images']) == (12, 68, 1)


def test_iof_iob_pool_pixels_over_images_and_skip_images_without_boxes():
    curve = disc.IoFIoB()
    # image 1: foreground scores 0.2, 0.8; background 0.1, 0.5
    curve.update(torch.tensor([[0.2, 0.8, 0.1, 0.5]]), torch.tensor([[True, True, False, False]]))
    # image 2: background 0.9 only is not used (no foreground) ...
    curve.update(torch.tensor([[0.9]]), torch.tensor([[False]]))
    # ... image 3: one background pixel at 0.9
    curve.update(torch.tensor([[0.9, 0.95]]), torch.tensor([[False, True]]))
    result = curve.result()
    i = result['thresholds'].index(0.5)
    # fg {0.2, 0.8, 0.95}: 2 of 3 above 0.5; bg {0.1, 0.5, 0.9}: 1 below 0.5, 1 above
    assert result['iof'][i] == pytest.approx(2 / 3, abs=1e-5)
    assert result['iob'][i] == pytest.approx(1 / 3, abs=1e-5)
    assert result['bg_above'][i] == pytest.approx(1 / 3, abs=1e-5)
    # AUC = P(fg > bg) over the 9 pairs: 0.2 beats 1, 0.8 beats 2, 0.95 beats 3
    assert result['auc'] == pytest.approx(6 / 9, abs=1e-5)
    assert result['images'] == 2
    with pytest.raises(ValueError, match='no image'):
        disc.IoFIoB().result()


def test_constant_map_is_uninformative():
    curve = disc.IoFIoB()
    curve.update(torch.full((4, 4), 0.3), disc.foreground_mask(torch.tensor([[0., 0., 2., 2.]]),
                                                                (4, 4)))
    assert curve.result()['auc'] == pytest.approx(0.5)


def test_attention_mass_spreads_weights_bilinearly():
    shapes = torch.tensor([[2, 2]])
    # one query, one head, one level, two points: the centre of cell (0, 0) with weight 0.25
    # and the centre of the map (the corner of all four cells) with weight 0.75
    locations = torch.tensor([[0.25, 0.25], [0.5, 0.5]]).view(1, 1, 1, 2, 2)
    weights = torch.tensor([0.25, 0.75]).view(1, 1, 1, 2)
    mass = att.attention_mass(locations, weights, shapes)
    assert torch.allclose(mass, torch.tensor([0.25 + 0.1875, 0.1875, 0.1875, 0.1875]))
    # a point outside the map lands nowhere
    outside = att.attention_mass(torch.tensor([2., 2.]).view(1, 1, 1, 1, 2),
                                 torch.ones(1, 1, 1, 1), shapes)
    assert float(outside.sum()) == 0.0


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    cfg = Config.fromfile(write_tiny_config(tmp_path_factory.mktemp('disc')))
    torch.manual_seed(0)
    model = build_model(cfg)
    inputs, samples = preprocess(model, next(iter_images(cfg)))
    return model, inputs, samples[0]


def test_encoder_levels_cover_the_image_part_of_each_level(tiny):
    model, inputs, sample = tiny
    levels = disc.encoder_levels(model, inputs, sample)
    height, width = sample.metainfo['img_shape']
    assert [tuple(level.shape) for level in levels] == [
        (64, -(-height // s), -(-width // s)) for s in (8, 16, 32)]


def test_recomputed_sampling_reproduces_the_cross_attention(tiny):
    """The analysis recomputes the sampling from the module's sub-layers: same output."""
    model, inputs, sample = tiny
    module = att.cross_attentions(model)[-1]
    with att.record_calls(module) as calls, torch.no_grad():
        model.query_head(model.extract_feat(inputs), [sample])
    call = calls[0]
    locations, weights = att.sampling_points(module, call)
    value = module.value_proj(call['value']).view(*call['value'].shape[:2], module.num_heads, -1)
    out = ms_deform_attn(value, call['spatial_shapes'], call['level_start_index'], locations,
                         weights)
    assert torch.allclose(module.output_proj(out) + call['query'], call['output'], atol=1e-5)


def test_positive_attention_holds_one_unit_per_head_and_matched_query(tiny):
    model, inputs, sample = tiny
    levels = att.positive_attention_levels(model, inputs, sample)
    num_gt = len(sample.gt_instances)
    heads = att.cross_attentions(model)[-1].num_heads
    total = sum(float(level.sum()) for level in levels)
    # each positive query's weights sum to 1 per head; some fall on padding or off the map
    assert 0 < total <= num_gt * heads + 1e-4
    assert total > 0.5 * num_gt * heads
