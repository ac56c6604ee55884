"""BitmapMasks / PolygonMasks: geometry by hand, boxes, RoI targets, RLE round trips."""
import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData

from codetr.structures import BitmapMasks, PolygonMasks
from codetr.structures.mask import (
    encode_masks,
    mask_to_polygons,
    polygons_to_mask,
    segmentation_to_mask,
)
from codetr.structures.mask.polygon_masks import clip_polygon

H, W = 12, 16
RECT = [2, 3, 10, 9]  # x1, y1, x2, y2: pixels x 2..9, y 3..8
TRI = [0, 0, 6, 0, 0, 6]


def bitmap() -> BitmapMasks:
    m = np.zeros((2, H, W), np.uint8)
    m[0, 3:9, 2:10] = 1
    m[1, 0:2, 14:16] = 1
    return BitmapMasks(m, H, W)


def polygons() -> PolygonMasks:
    x1, y1, x2, y2 = RECT
    return PolygonMasks([[[x1, y1, x2, y1, x2, y2, x1, y2]], [TRI]], H, W)


def test_polygon_rasterises_to_its_pixels_and_boxes_agree():
    poly = polygons()
    bm = poly.to_bitmap()
    assert bm.masks.shape == (2, H, W) and bm.masks.dtype == np.uint8
    assert bm.masks[0].sum() == 48 and bm.masks[0, 3:9, 2:10].all()
    np.testing.assert_array_equal(poly.get_bboxes()[0], RECT)
    np.testing.assert_array_equal(bm.get_bboxes()[0], RECT)
    # the triangle's diagonal cuts pixels: the raster box is within a pixel of the outline's
    np.testing.assert_allclose(bm.get_bboxes()[1], poly.get_bboxes()[1], atol=1)
    np.testing.assert_allclose(poly.areas, [48, 18])


def test_bitmap_geometry_by_hand():
    bm = bitmap()
    np.testing.assert_array_equal(bm.get_bboxes(), [RECT, [14, 0, 16, 2]])
    np.testing.assert_array_equal(bm.flip('horizontal').get_bboxes(), [[6, 3, 14, 9], [0, 0, 2, 2]])
    np.testing.assert_array_equal(bm.flip('vertical').get_bboxes()[0], [2, 3, 10, 9])
    np.testing.assert_array_equal(bm.flip('diagonal').get_bboxes()[1], [0, 10, 2, 12])
    np.testing.assert_array_equal(bm.resize((24, 32)).get_bboxes(), [[4, 6, 20, 18],
                                                                      [28, 0, 32, 4]])
    np.testing.assert_array_equal(bm.rescale(2.0).masks.shape, (2, 24, 32))
    padded = bm.pad((20, 30))
    assert padded.masks.shape == (2, 20, 30) and padded.masks[:, H:].sum() == 0
    crop = bm.crop(np.array([4, 2, 12, 10]))
    assert (crop.height, crop.width) == (8, 8)
    np.testing.assert_array_equal(crop.get_bboxes(), [[0, 1, 6, 7], [0, 0, 0, 0]])
    moved = bm.translate((H, W), 3, 'horizontal')
    np.testing.assert_array_equal(moved.get_bboxes()[0], [5, 3, 13, 9])
    assert moved.masks[1].sum() == 0  # shifted out of the canvas
    np.testing.assert_array_equal(bm.translate((H, W), -2, 'vertical').get_bboxes()[0],
                                  [2, 1, 10, 7])
    np.testing.assert_array_equal(bm.areas, [48, 4])
    t = bm.to_tensor(torch.float32)
    assert t.shape == (2, H, W) and t.dtype == torch.float32 and t.sum() == 52


def test_polygon_geometry_matches_bitmap_geometry():
    poly, bm = polygons(), polygons().to_bitmap()
    for fn in (lambda m: m.flip('horizontal'), lambda m: m.flip('diagonal'),
               lambda m: m.resize((24, 32)), lambda m: m.crop(np.array([4, 2, 12, 10])),
               lambda m: m.translate((H, W), 3, 'horizontal'), lambda m: m.pad((20, 30))):
        np.testing.assert_allclose(fn(poly).to_bitmap().get_bboxes(), fn(bm).get_bboxes(),
                                   atol=1)
    # cropping clips the outline to the window: the rectangle's corner becomes the window's
    np.testing.assert_allclose(poly.crop(np.array([4, 5, 16, 12])).get_bboxes()[0],
                               [0, 0, 6, 4])


def test_clip_polygon_is_the_intersection_with_the_window():
    square = np.array([0, 0, 10, 0, 10, 10, 0, 10], np.float64)
    clipped = clip_polygon(square, 5, -5, 20, 5).reshape(-1, 2)
    assert {tuple(p) for p in clipped} == {(5, 0), (10, 0), (10, 5), (5, 5)}
    assert clip_polygon(square, 20, 20, 30, 30).size == 0


def test_indexing_cat_and_instance_data():
    for masks in (bitmap(), polygons()):
        assert len(masks[np.array([False, True])]) == 1
        assert len(masks[[1, 0, 1]]) == 3 and len(masks[1:]) == 1 and len(masks[0]) == 1
        joined = type(masks).cat([masks, masks[:1]])
        assert len(joined) == 3
        np.testing.assert_allclose(joined.get_bboxes()[2], masks.get_bboxes()[0])
        inst = InstanceData(labels=torch.tensor([3, 4]), masks=masks)
        picked = inst[torch.tensor([False, True])]
        assert picked.labels.tolist() == [4] and len(picked.masks) == 1
        np.testing.assert_allclose(picked.masks.get_bboxes(), masks.get_bboxes()[1:])
    with pytest.raises(ValueError, match='different image sizes'):
        BitmapMasks.cat([bitmap(), bitmap().pad((20, 20))])


def test_crop_and_resize_cuts_roi_targets():
    bm = bitmap()
    # the RoI is exactly the rectangle: a full target; half of it: left half full
    out = bm.crop_and_resize(torch.tensor([[2., 3, 10, 9], [0, 3, 8, 9]]), (4, 4),
                             torch.tensor([0, 0]))
    assert out.masks.shape == (2, 4, 4)
    assert out.masks[0].all()
    np.testing.assert_array_equal(out.masks[1], [[0, 1, 1, 1]] * 4)
    poly_out = polygons().crop_and_resize(np.array([[2., 3, 10, 9], [0, 3, 8, 9]]), (4, 4),
                                          np.array([0, 0]))
    np.testing.assert_array_equal(poly_out.masks, out.masks)
    empty = bm.crop_and_resize(torch.zeros(0, 4), (28, 28), torch.zeros(0, dtype=torch.long))
    assert empty.masks.shape == (0, 28, 28)


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's crowd format: run lengths of the column-major mask, starting with zeros."""
    flat = mask.flatten(order='F')
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return dict(counts=counts, size=list(mask.shape))


def test_polygon_and_its_rle_give_the_same_mask():
    star = [8, 1, 10, 6, 15, 6, 11, 9, 13, 14, 8, 11, 3, 14, 5, 9, 1, 6, 6, 6]
    from_poly = polygons_to_mask([star], H, W)
    assert from_poly.sum() > 30
    compressed = encode_masks(from_poly[None])[0]
    assert isinstance(compressed['counts'], str)
    np.testing.assert_array_equal(segmentation_to_mask(compressed, H, W), from_poly)
    np.testing.assert_array_equal(segmentation_to_mask(_uncompressed_rle(from_poly), H, W),
                                  from_poly)
    # and back to polygons (the poly2mask=False path for RLE): the same pixels
    np.testing.assert_array_equal(polygons_to_mask(mask_to_polygons(from_poly), H, W), from_poly)
    with pytest.raises(ValueError, match='does not match the image'):
        segmentation_to_mask(compressed, H + 1, W)
