import numpy as np
import pytest

from codetr.datasets.transforms import Resize
from codetr.registry import TRANSFORMS

from .painted import assert_boxes_follow_paint, painted_box, painted_results

BOXES = [[2, 3, 12, 10], [20, 5, 35, 30], [40, 28, 58, 39]]  # inside a 40 x 60 (h, w) image


@pytest.mark.parametrize('cfg, shape, factor', [
    # keep_ratio: min(120 / 60, 100 / 40) = 2 -> (80, 120)
    (dict(scale=(120, 100), keep_ratio=True), (80, 120), (2.0, 2.0)),
    # free aspect: w 60 -> 30, h 40 -> 80
    (dict(scale=(30, 80), keep_ratio=False), (80, 30), (0.5, 2.0)),
    (dict(scale_factor=0.5), (20, 30), (0.5, 0.5)),
])
def test_resize_boxes_follow_image(cfg, shape, factor):
    out = TRANSFORMS.build(dict(type='Resize', interpolation='nearest', **cfg))(
        painted_results((40, 60), BOXES))
    assert out['img'].shape[:2] == shape and out['img_shape'] == shape
    assert out['scale_factor'] == pytest.approx(factor)
    np.testing.assert_allclose(out['gt_bboxes'][1], np.array(BOXES[1]) * (factor * 2))
    assert out['gt_bboxes'].dtype == np.float32
    assert_boxes_follow_paint(out)


def test_resize_clips_object_border_unless_told_not_to():
    res = painted_results((40, 60), [[50, 30, 70, 45]])  # sticks out right and bottom
    clipped = Resize(scale=(120, 80), keep_ratio=True)(dict(res))
    np.testing.assert_allclose(clipped['gt_bboxes'][0], [100, 60, 120, 80])
    loose = Resize(scale=(120, 80), keep_ratio=True, clip_object_border=False)(dict(res))
    np.testing.assert_allclose(loose['gt_bboxes'][0], [100, 60, 140, 90])


@pytest.mark.parametrize('cfg', [
    dict(type='RandomChoiceResize', scales=[(90, 90), (30, 120)], keep_ratio=True,
         interpolation='nearest'),
    dict(type='RandomResize', scale=(60, 40), ratio_range=(0.5, 2.0), keep_ratio=True,
         interpolation='nearest'),
])
def test_mmcv_random_resizes_use_codetr_resize(cfg):
    transform = TRANSFORMS.build(cfg)
    assert isinstance(transform.resize, Resize)
    for seed in range(4):
        np.random.seed(seed)
        out = transform(painted_results((40, 60), BOXES))
        h, w = out['img'].shape[:2]
        assert out['scale_factor'] == pytest.approx((w / 60, h / 40))
        assert_boxes_follow_paint(out)


@pytest.mark.parametrize('direction, expected', [
    ('horizontal', [60 - 35, 5, 60 - 20, 30]),
    ('vertical', [20, 40 - 30, 35, 40 - 5]),
    ('diagonal', [60 - 35, 40 - 30, 60 - 20, 40 - 5]),
])
def test_flip_boxes_follow_image(direction, expected):
    flip = TRANSFORMS.build(dict(type='RandomFlip', prob=1.0, direction=direction))
    out = flip(painted_results((40, 60), BOXES))
    assert out['flip'] is True and out['flip_direction'] == direction
    np.testing.assert_allclose(out['gt_bboxes'][1], expected)
    np.testing.assert_allclose(painted_box(out['img'], 1), expected)
    assert_boxes_follow_paint(out, atol=0)


@pytest.mark.parametrize('direction', ['horizontal', 'vertical', 'diagonal'])
def test_flip_twice_is_identity(direction):
    flip = TRANSFORMS.build(dict(type='RandomFlip', prob=1.0, direction=direction))
    res = painted_results((40, 60), BOXES)
    twice = flip(flip(dict(res, img=res['img'].copy(), gt_bboxes=res['gt_bboxes'].copy())))
    np.testing.assert_array_equal(twice['img'], res['img'])
    np.testing.assert_array_equal(twice['gt_bboxes'], res['gt_bboxes'])


def test_flip_probabilities():
    res = painted_results((40, 60), BOXES)
    never = TRANSFORMS.build(dict(type='RandomFlip', prob=0.0))(dict(res))
    assert never['flip'] is False and never['flip_direction'] is None
    np.testing.assert_array_equal(never['gt_bboxes'], res['gt_bboxes'])
    vertical_only = TRANSFORMS.build(
        dict(type='RandomFlip', prob=[0.0, 1.0], direction=['horizontal', 'vertical']))
    assert all(vertical_only(dict(res))['flip_direction'] == 'vertical' for _ in range(5))
    np.random.seed(0)
    half = TRANSFORMS.build(dict(type='RandomFlip', prob=0.5))
    flips = sum(half(dict(res))['flip'] for _ in range(400))
    assert 150 < flips < 250


def test_flip_rejects_bad_config():
    with pytest.raises(ValueError, match='direction'):
        TRANSFORMS.build(dict(type='RandomFlip', prob=0.5, direction='sideways'))
    with pytest.raises(ValueError, match='sum to <= 1'):
        TRANSFORMS.build(dict(type='RandomFlip', prob=[0.7, 0.6],
                              direction=['horizontal', 'vertical']))


def test_random_choice_picks_one_branch():
    choice = TRANSFORMS.build(dict(type='RandomChoice', transforms=[
        [dict(type='RandomFlip', prob=1.0)],
        [dict(type='Resize', scale=(120, 80), keep_ratio=True, interpolation='nearest')]]))
    shapes = set()
    for seed in range(10):
        np.random.seed(seed)
        out = choice(painted_results((40, 60), BOXES))
        shapes.add(out['img'].shape[:2])
        assert_boxes_follow_paint(out)
    assert shapes == {(40, 60), (80, 120)}


MIN_ARGS = dict(RandomFlip=dict(prob=0.5), RandomCrop=dict(crop_size=(8, 8)),
                Pad=dict(size=(8, 8)), Resize=dict(scale=(10, 10), keep_ratio=True))


def test_every_codetr_transform_has_an_informative_repr():
    names = sorted(TRANSFORMS._module_dict)  # codetr's own entries, not mmcv's
    assert {'LoadImageFromFile', 'LoadAnnotations', 'Resize', 'RandomFlip', 'RandomCrop',
            'FilterAnnotations', 'Pad', 'PackDetInputs'} <= set(names)
    for name in names:
        text = repr(TRANSFORMS.build(dict(type=name, **MIN_ARGS.get(name, {}))))
        assert text.startswith(f'{name}(') and '=' in text, text
    assert 'keep_ratio=True' in repr(Resize(scale=(10, 10), keep_ratio=True))


def test_boxes_follow_paint_through_a_composed_pipeline():
    from mmcv.transforms import Compose
    pipeline = Compose([
        dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical', 'diagonal']),
        dict(type='RandomChoiceResize', scales=[(80, 200), (100, 200)], keep_ratio=True,
             interpolation='nearest'),
        dict(type='RandomCrop', crop_type='absolute_range', crop_size=(50, 90),
             allow_negative_crop=True),
        dict(type='Resize', scale=(64, 64), keep_ratio=True, interpolation='nearest'),
        dict(type='Pad', size_divisor=32),
    ])
    for seed in range(10):
        np.random.seed(seed)
        out = pipeline(painted_results((40, 60), BOXES))
        assert out['img'].shape[0] % 32 == 0 and out['img'].shape[1] % 32 == 0
        # Two nearest-neighbour resizes in a row: each may move an edge by up to a pixel.
        assert_boxes_follow_paint(out, atol=2.0, min_side=2.0)
