"""Box drawing, the visualizer's layout and the visualization hook's files."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData

from codetr.registry import HOOKS, VISUALIZERS
from codetr.structures import DetDataSample
from codetr.visualization import class_color, draw_boxes

CLASSES = ('a', 'b', 'c')


def test_class_colors_are_stable_and_distinct():
    colors = [class_color(i) for i in range(10)]
    assert len(set(colors)) == 10
    assert class_color(3) == colors[3]
    assert all(0 <= c <= 255 for color in colors for c in color)


def test_draw_boxes_draws_class_color_on_the_border_only():
    img = np.zeros((64, 64, 3), np.uint8)
    out = draw_boxes(img, torch.tensor([[10., 30., 40., 60.]]), torch.tensor([1]), CLASSES,
                     thickness=1)
    assert img.sum() == 0  # the input is left unchanged
    color = np.array(class_color(1))
    for x, y in [(10, 45), (40, 45), (25, 60)]:  # left, right and bottom edges
        assert (out[y, x] == color).all(), (x, y)
    assert (out[45, 25] == 0).all()  # inside the box
    assert (out[5, 60] == 0).all()  # away from box and caption


def test_draw_boxes_rejects_unknown_label():
    with pytest.raises(ValueError, match='no name'):
        draw_boxes(np.zeros((8, 8, 3), np.uint8), [[0, 0, 4, 4]], [3], CLASSES)


def _sample(img_shape=(64, 64), **meta) -> DetDataSample:
    sample = DetDataSample(metainfo=dict(img_shape=img_shape, ori_shape=img_shape, **meta))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[8., 8., 30., 30.]]),
                                       labels=torch.tensor([0]))
    sample.pred_instances = InstanceData(
        bboxes=torch.tensor([[34., 34., 60., 60.], [2., 40., 20., 60.]]),
        scores=torch.tensor([0.9, 0.1]), labels=torch.tensor([2, 1]))
    return sample


def test_visualizer_writes_gt_and_pred_panels(tmp_path):
    vis = VISUALIZERS.build(dict(type='DetLocalVisualizer', name='test_vis_panels',
                                 line_width=1))
    vis.dataset_meta = dict(classes=CLASSES)
    out = tmp_path / 'x.png'
    vis.add_datasample('x', np.zeros((64, 64, 3), np.uint8), _sample(), out_file=str(out),
                       pred_score_thr=0.3)
    drawn = cv2.imread(str(out))
    assert drawn.shape == (64, 128, 3)  # GT panel | prediction panel
    assert (drawn[20, 8] == class_color(0)).all()  # GT box, left panel
    assert (drawn[20, 64 + 8] == 0).all()  # GT not on the prediction panel
    assert (drawn[50, 64 + 60] == class_color(2)).all()  # prediction with score .9
    assert (drawn[50, 64 + 20] == 0).all()  # the .1 prediction is below the threshold


def test_hook_writes_one_png_per_test_image(tmp_path):
    vis = VISUALIZERS.build(dict(type='DetLocalVisualizer', name='test_vis_hook'))
    vis.dataset_meta = dict(classes=CLASSES)
    img_path = tmp_path / 'img_7.jpg'
    cv2.imwrite(str(img_path), np.full((64, 64, 3), 128, np.uint8))
    hook = HOOKS.build(dict(type='DetVisualizationHook', draw=True, test_out_dir='show'))
    runner = SimpleNamespace(work_dir=str(tmp_path), timestamp='20250101_000000', iter=0)
    hook.before_test_epoch(runner)
    sample = _sample(img_path=str(img_path))
    hook.after_test_iter(runner, 0, {}, [sample])
    out = tmp_path / '20250101_000000' / 'show' / 'img_7.png'
    assert out.is_file()
    assert cv2.imread(str(out)).shape == (64, 128, 3)
    silent = HOOKS.build(dict(type='DetVisualizationHook', draw=False, test_out_dir='quiet'))
    silent.before_test_epoch(runner)
    silent.after_test_iter(runner, 0, {}, [sample])
    assert not (tmp_path / '20250101_000000' / 'quiet').exists()


def test_draw_masks_fills_the_mask_in_its_class_colour_only():
    from codetr.structures import BitmapMasks
    from codetr.visualization import draw_masks

    img = np.full((40, 50, 3), 100, np.uint8)
    mask = np.zeros((1, 40, 50), bool)
    mask[0, 10:30, 5:25] = True
    color = np.array(class_color(2), np.float32)
    for masks in (torch.from_numpy(mask), BitmapMasks(mask, 40, 50)):
        out = draw_masks(img, masks, [2], alpha=0.5)
        np.testing.assert_array_equal(out[20, 15], ((100 + color) / 2).astype(np.uint8))
        assert (out[35, 40] == 100).all() and (out[:10] == 100).all()  # outside: untouched
        assert (out[10, 5:25] == color.astype(np.uint8)).all()  # the outline
    with pytest.raises(ValueError, match='one label per mask'):
        draw_masks(img, mask, [1, 2])
    with pytest.raises(ValueError, match='do not fit'):
        draw_masks(img, mask[:, :30], [1])


def test_visualizer_draws_predicted_masks(tmp_path):
    vis = VISUALIZERS.build(dict(type='DetLocalVisualizer', name='test_vis_masks',
                                 line_width=1))
    vis.dataset_meta = dict(classes=CLASSES)
    sample = _sample()
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 40:56, 40:56] = True
    sample.pred_instances.masks = masks
    drawn = vis.draw_sample(np.zeros((64, 64, 3), np.uint8), sample, pred_score_thr=0.3)
    right = drawn[:, 64:, ::-1]  # BGR of the prediction panel
    assert (right[48, 48] > 0).any()  # inside the mask (and the box): filled
    assert (right[48, 36] == 0).all()  # inside the box, outside the mask: not filled
