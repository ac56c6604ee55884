import numpy as np
import pytest

from codetr.datasets.transforms import FilterAnnotations, RandomCrop
from codetr.registry import TRANSFORMS

from .painted import assert_boxes_follow_paint, painted_results

# 40 x 60 (h, w) image. The crop below is x in [5, 35), y in [10, 30).
BOXES = [[8, 12, 20, 20],    # 0: inside
         [30, 2, 50, 15],    # 1: crosses the right and top edges -> clipped
         [40, 32, 55, 38],   # 2: outside -> dropped
         [0, 25, 7, 39]]     # 3: crosses the left/bottom edges, ignored -> clipped, still ignored
LABELS = [0, 1, 2, 3]
IGNORE = [False, False, False, True]


def fixed_crop(**kwargs) -> RandomCrop:
    crop = RandomCrop(crop_size=(30, 20), crop_type='absolute', **kwargs)  # (w, h)
    crop._offset = lambda margin_h, margin_w: (10, 5)  # (y0, x0): a known window
    return crop


def test_crop_shifts_clips_and_drops_boxes_keeping_labels_aligned():
    out = fixed_crop()(painted_results((40, 60), BOXES, LABELS, IGNORE))
    assert out['img'].shape[:2] == (20, 30) and out['img_shape'] == (20, 30)
    np.testing.assert_allclose(out['gt_bboxes'], [[3, 2, 15, 10], [25, 0, 30, 5], [0, 15, 2, 20]])
    assert out['gt_bboxes_labels'].tolist() == [0, 1, 3]
    assert out['gt_ignore_flags'].tolist() == [False, False, True]
    assert_boxes_follow_paint(out, atol=0)


def test_crop_without_border_clipping_keeps_shifted_boxes():
    out = fixed_crop(bbox_clip_border=False)(painted_results((40, 60), BOXES, LABELS, IGNORE))
    np.testing.assert_allclose(out['gt_bboxes'][1], [25, -8, 45, 5])
    assert out['gt_bboxes_labels'].tolist() == [0, 1, 3]


def test_negative_crop_is_rejected_or_kept_empty():
    outside = [[40, 32, 55, 38]]
    assert fixed_crop()(painted_results((40, 60), outside)) is None
    out = fixed_crop(allow_negative_crop=True)(painted_results((40, 60), outside))
    assert out['gt_bboxes'].shape == (0, 4)
    assert out['gt_bboxes_labels'].shape == (0,) and out['gt_ignore_flags'].shape == (0,)
    assert out['img'].shape[:2] == (20, 30)


def test_random_crop_boxes_follow_paint_over_seeds():
    crop = TRANSFORMS.build(dict(type='RandomCrop', crop_type='absolute_range',
                                 crop_size=(16, 36), allow_negative_crop=True))
    for seed in range(20):
        np.random.seed(seed)
        out = crop(painted_results((40, 60), BOXES[:3]))
        h, w = out['img'].shape[:2]
        assert 16 <= h <= 36 and 16 <= w <= 36
        assert_boxes_follow_paint(out, atol=0)


@pytest.mark.parametrize('crop_type, crop_size, lo, hi', [
    ('absolute', (100, 25), (25, 60), (25, 60)),       # (w, h); w capped at the image
    ('absolute_range', (30, 50), (30, 30), (40, 50)),  # h capped at 40
    ('relative', (0.5, 0.25), (10, 30), (10, 30)),
    ('relative_range', (0.5, 0.5), (20, 30), (40, 60)),
])
def test_crop_size_rules(crop_type, crop_size, lo, hi):
    crop = RandomCrop(crop_size=crop_size, crop_type=crop_type)
    np.random.seed(0)
    sizes = np.array([crop._crop_hw(40, 60) for _ in range(50)])
    assert (sizes.min(0) >= lo).all() and (sizes.max(0) <= hi).all()


def test_crop_rejects_bad_config():
    with pytest.raises(ValueError, match='crop_type'):
        RandomCrop(crop_size=(10, 10), crop_type='square')
    with pytest.raises(ValueError, match=r'\(0, 1\]'):
        RandomCrop(crop_size=(1.5, 0.5), crop_type='relative')
    assert 'allow_negative_crop=True' in repr(RandomCrop((5, 5), allow_negative_crop=True))


def test_filter_annotations_by_size():
    res = painted_results((40, 60), [[0, 0, 10, 10], [0, 0, 1, 10], [5, 5, 15, 6.5]],
                          labels=[4, 5, 6], ignore=[False, True, False])
    out = FilterAnnotations(min_gt_bbox_wh=(1, 1))(res)
    # widths 10, 1, 10 and heights 10, 10, 1.5: the 1-pixel-wide box is not > 1.
    assert out['gt_bboxes_labels'].tolist() == [4, 6]
    assert out['gt_ignore_flags'].tolist() == [False, False]
    np.testing.assert_allclose(out['gt_bboxes'][1], [5, 5, 15, 6.5])


def test_filter_annotations_all_filtered():
    tiny = [[0, 0, 1e-3, 5]]
    assert FilterAnnotations(min_gt_bbox_wh=(1e-2, 1e-2))(painted_results((8, 8), tiny)) is None
    kept = FilterAnnotations(min_gt_bbox_wh=(1e-2, 1e-2), keep_empty=False)(
        painted_results((8, 8), tiny))
    assert kept['gt_bboxes'].shape == (0, 4)
    empty = FilterAnnotations()(painted_results((8, 8), []))
    assert empty is not None and empty['gt_bboxes'].shape == (0, 4)
