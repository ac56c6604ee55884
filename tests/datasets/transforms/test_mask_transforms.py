"""Masks through the pipeline: after every geometric transform, the box of each transformed
mask equals its transformed box within a pixel (bitmap and polygon masks alike)."""
import json

import numpy as np
import pytest

from codetr.registry import DATASETS, MODELS, TRANSFORMS
from codetr.structures import BitmapMasks, PolygonMasks

H, W = 60, 80
# Axis-aligned rectangles: clipping a box to a crop window is then exactly the box of the
# cropped mask. Shapes with slanted sides need recompute_bbox (tested separately).
RECTS = [[4, 6, 30, 26], [40, 10, 76, 50], [10, 34, 36, 58]]


def results_with_masks(kind: str, rects=RECTS) -> dict:
    polys = [[[x1, y1, x2, y1, x2, y2, x1, y2]] for x1, y1, x2, y2 in rects]
    masks = PolygonMasks(polys, H, W)
    if kind == 'bitmap':
        masks = masks.to_bitmap()
    n = len(rects)
    return dict(img=np.zeros((H, W, 3), np.uint8), img_shape=(H, W), ori_shape=(H, W),
                gt_bboxes=np.asarray(rects, np.float32), gt_masks=masks,
                gt_bboxes_labels=np.arange(n, dtype=np.int64),
                gt_ignore_flags=np.zeros(n, bool))


def assert_masks_follow_boxes(out: dict, atol: float = 1.0) -> None:
    masks, boxes = out['gt_masks'], out['gt_bboxes']
    assert len(masks) == len(boxes) == len(out['gt_bboxes_labels'])
    assert (masks.height, masks.width) == tuple(out['img'].shape[:2])
    # the box of a polygon mask is its outline's extent, of a bitmap its pixels' extent
    np.testing.assert_allclose(masks.get_bboxes(), boxes, atol=atol)


TRANSFORM_CFGS = {
    'resize_up_keep_ratio': dict(type='Resize', scale=(200, 150), keep_ratio=True),
    'resize_down_free': dict(type='Resize', scale=(37, 29), keep_ratio=False),
    'flip_horizontal': dict(type='RandomFlip', prob=1.0, direction='horizontal'),
    'flip_vertical': dict(type='RandomFlip', prob=1.0, direction='vertical'),
    'flip_diagonal': dict(type='RandomFlip', prob=1.0, direction='diagonal'),
    'random_crop': dict(type='RandomCrop', crop_size=(50, 40), allow_negative_crop=True),
    'pad_lsj': dict(type='Pad', size=(96, 96), pad_val=dict(img=(114, 114, 114))),
    'pad_divisor': dict(type='Pad', size_divisor=32),
    'random_choice_resize': dict(type='RandomChoiceResize', scales=[(100, 50), (64, 48)],
                                 keep_ratio=True),
    'random_resize_lsj': dict(type='RandomResize', scale=(96, 96), ratio_range=(0.1, 2.0),
                              keep_ratio=True),
    'filter_annotations': dict(type='FilterAnnotations', min_gt_bbox_wh=(27, 1)),
}


@pytest.mark.parametrize('kind', ['bitmap', 'polygon'])
@pytest.mark.parametrize('name', list(TRANSFORM_CFGS))
def test_every_transform_moves_masks_with_boxes(name, kind):
    transform = TRANSFORMS.build(TRANSFORM_CFGS[name])
    for seed in range(3):
        np.random.seed(seed)
        out = transform(results_with_masks(kind))
        assert out is not None
        assert type(out['gt_masks']).__name__ == ('BitmapMasks' if kind == 'bitmap'
                                                  else 'PolygonMasks')
        assert_masks_follow_boxes(out)


@pytest.mark.parametrize('kind', ['bitmap', 'polygon'])
def test_lsj_chain_with_recompute_bbox_on_round_shapes(kind):
    """The LSJ training chain; discs are cut by the crop, so their boxes are recomputed."""
    ys, xs = np.mgrid[0:H, 0:W]
    discs = [((xs - cx) ** 2 + (ys - cy) ** 2 <= r * r) for cx, cy, r in
             [(15, 15, 12), (60, 30, 18), (30, 48, 10)]]
    masks = BitmapMasks(np.stack(discs), H, W)
    if kind == 'polygon':
        from codetr.structures.mask import mask_to_polygons
        masks = PolygonMasks([mask_to_polygons(d) for d in discs], H, W)
    pipeline = [TRANSFORMS.build(c) for c in (
        dict(type='RandomResize', scale=(96, 96), ratio_range=(0.5, 2.0), keep_ratio=True),
        dict(type='RandomCrop', crop_type='absolute', crop_size=(96, 96), recompute_bbox=True,
             allow_negative_crop=True),
        dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
        dict(type='RandomFlip', prob=0.5),
        dict(type='Pad', size=(96, 96), pad_val=dict(img=(114, 114, 114))))]
    for seed in range(6):
        np.random.seed(seed)
        out = dict(img=np.zeros((H, W, 3), np.uint8), img_shape=(H, W), ori_shape=(H, W),
                   gt_bboxes=masks.get_bboxes(), gt_masks=masks,
                   gt_bboxes_labels=np.arange(3), gt_ignore_flags=np.zeros(3, bool))
        for t in pipeline:
            out = t(out)
        assert out['img'].shape[:2] == (96, 96)
        assert_masks_follow_boxes(out)


def test_crop_drops_masks_with_their_boxes_and_filter_by_mask_area():
    crop = TRANSFORMS.build(dict(type='RandomCrop', crop_size=(40, 40)))
    crop._offset = lambda margin_h, margin_w: (0, 0)  # window x, y in [0, 40)
    out = crop(results_with_masks('bitmap'))
    assert out['gt_bboxes_labels'].tolist() == [0, 2]  # rect 1 starts at x = 40
    assert len(out['gt_masks']) == 2
    np.testing.assert_array_equal(out['gt_masks'].areas, [26 * 20, 26 * 6])
    keep_big = TRANSFORMS.build(dict(type='FilterAnnotations', by_box=False, by_mask=True,
                                     min_gt_mask_area=200))
    out = keep_big(out)
    assert out['gt_bboxes_labels'].tolist() == [0] and len(out['gt_masks']) == 1


def test_pack_det_inputs_splits_masks_with_ignore_flags():
    res = results_with_masks('bitmap')
    res['gt_ignore_flags'] = np.array([False, True, False])
    packed = TRANSFORMS.build(dict(type='PackDetInputs'))(res)
    gt, ignored = packed['data_samples'].gt_instances, packed['data_samples'].ignored_instances
    assert isinstance(gt.masks, BitmapMasks) and len(gt.masks) == 2 and len(ignored.masks) == 1
    np.testing.assert_array_equal(gt.masks.get_bboxes(), [RECTS[0], RECTS[2]])
    np.testing.assert_array_equal(ignored.masks.get_bboxes(), [RECTS[1]])


def test_data_preprocessor_pads_masks_with_the_batch():
    pack = TRANSFORMS.build(dict(type='PackDetInputs'))
    small = results_with_masks('bitmap')
    big = results_with_masks('polygon')
    big['img'] = np.zeros((70, 90, 3), np.uint8)
    batch = [pack(small), pack(big)]
    pre = MODELS.build(dict(type='DetDataPreprocessor', pad_size_divisor=32, pad_mask=True,
                            batch_augments=[dict(type='BatchFixedSizePad', size=(128, 160),
                                                 pad_mask=True)]))
    data = pre(dict(inputs=[b['inputs'] for b in batch],
                    data_samples=[b['data_samples'] for b in batch]), training=True)
    assert data['inputs'].shape[-2:] == (128, 160)
    for sample in data['data_samples']:
        masks = sample.gt_instances.masks
        assert (masks.height, masks.width) == (128, 160)
        np.testing.assert_allclose(
            (masks.to_bitmap() if isinstance(masks, PolygonMasks) else masks).get_bboxes(),
            RECTS)
    plain = MODELS.build(dict(type='DetDataPreprocessor', pad_size_divisor=32))
    data = plain(dict(inputs=[batch[0]['inputs']],
                      data_samples=[pack(results_with_masks('bitmap'))['data_samples']]),
                 training=True)
    assert data['data_samples'][0].gt_instances.masks.height == H  # pad_mask off: untouched
    data = pre(dict(inputs=[batch[0]['inputs']],
                    data_samples=[pack(results_with_masks('bitmap'))['data_samples']]))
    assert data['data_samples'][0].gt_instances.masks.height == H  # testing: untouched


def test_coco_dataset_reads_polygons_and_crowd_rle(tmp_path):
    """A COCO json with a polygon object and an RLE crowd region loads both as masks."""
    import cv2
    from pycocotools import mask as mask_util

    cv2.imwrite(str(tmp_path / 'a.png'), np.zeros((H, W, 3), np.uint8))
    crowd = np.zeros((H, W), np.uint8, order='F')
    crowd[40:50, 50:70] = 1
    rle = mask_util.encode(np.asfortranarray(crowd))
    rle['counts'] = rle['counts'].decode()
    x1, y1, x2, y2 = RECTS[0]
    ann = dict(images=[dict(id=1, file_name='a.png', height=H, width=W)],
               categories=[dict(id=1, name='thing')],
               annotations=[dict(id=1, image_id=1, category_id=1, iscrowd=0, area=520,
                                 bbox=[x1, y1, x2 - x1, y2 - y1],
                                 segmentation=[[x1, y1, x2, y1, x2, y2, x1, y2]]),
                            dict(id=2, image_id=1, category_id=1, iscrowd=1, area=200,
                                 bbox=[50, 40, 20, 10], segmentation=rle)])
    (tmp_path / 'ann.json').write_text(json.dumps(ann))
    for poly2mask, cls in ((True, BitmapMasks), (False, PolygonMasks)):
        dataset = DATASETS.build(dict(
            type='CocoDataset', ann_file=str(tmp_path / 'ann.json'), data_prefix=dict(img=''),
            data_root=str(tmp_path), metainfo=dict(classes=('thing',)), pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', with_mask=True, poly2mask=poly2mask),
                dict(type='PackDetInputs')]))
        sample = dataset[0]['data_samples']
        gt, crowd_masks = sample.gt_instances.masks, sample.ignored_instances.masks
        assert isinstance(gt, cls) and isinstance(crowd_masks, cls)
        raster = gt.to_bitmap() if poly2mask is False else gt
        np.testing.assert_array_equal(raster.get_bboxes(), [RECTS[0]])
        crowd_raster = crowd_masks.to_bitmap() if poly2mask is False else crowd_masks
        np.testing.assert_array_equal(crowd_raster.masks[0], crowd)
        assert sample.gt_instances.bboxes.tolist() == [RECTS[0]]
