import cv2
import numpy as np
import pytest

from codetr.registry import TRANSFORMS


def test_load_image_reads_bgr_uint8_and_shapes(tmp_path):
    img = np.zeros((12, 20, 3), dtype=np.uint8)
    img[3, 5] = (10, 20, 30)  # B, G, R
    path = tmp_path / 'a.png'
    cv2.imwrite(str(path), img)
    out = TRANSFORMS.build(dict(type='LoadImageFromFile'))(dict(img_path=str(path)))
    assert out['img'].dtype == np.uint8 and out['img'].shape == (12, 20, 3)
    assert out['img'][3, 5].tolist() == [10, 20, 30]
    assert out['img_shape'] == (12, 20) and out['ori_shape'] == (12, 20)
    as_float = TRANSFORMS.build(dict(type='LoadImageFromFile', to_float32=True))(
        dict(img_path=str(path)))
    assert as_float['img'].dtype == np.float32


def test_load_image_missing_file_names_path(tmp_path):
    missing = str(tmp_path / 'nope.jpg')
    with pytest.raises(FileNotFoundError, match='nope.jpg'):
        TRANSFORMS.build(dict(type='LoadImageFromFile'))(dict(img_path=missing))
    skip = TRANSFORMS.build(dict(type='LoadImageFromFile', ignore_empty=True))
    assert skip(dict(img_path=missing)) is None


def test_load_annotations_arrays_and_dtypes():
    info = dict(img_path='x.jpg', instances=[
        dict(bbox=[1, 2, 3, 4], bbox_label=5, ignore_flag=0),
        dict(bbox=[0.5, 1.5, 8, 9], bbox_label=0, ignore_flag=1)])
    out = TRANSFORMS.build(dict(type='LoadAnnotations', with_bbox=True))(info)
    assert out['gt_bboxes'].dtype == np.float32 and out['gt_bboxes'].shape == (2, 4)
    np.testing.assert_allclose(out['gt_bboxes'][1], [0.5, 1.5, 8, 9])
    assert out['gt_bboxes_labels'].dtype == np.int64
    assert out['gt_bboxes_labels'].tolist() == [5, 0]
    assert out['gt_ignore_flags'].dtype == bool
    assert out['gt_ignore_flags'].tolist() == [False, True]


def test_load_annotations_empty_and_errors():
    out = TRANSFORMS.build(dict(type='LoadAnnotations'))(dict(img_path='x', instances=[]))
    assert out['gt_bboxes'].shape == (0, 4) and out['gt_bboxes_labels'].shape == (0,)
    with pytest.raises(ValueError, match='x1, y1, x2, y2'):
        TRANSFORMS.build(dict(type='LoadAnnotations'))(
            dict(img_path='x', instances=[dict(bbox=[1, 2, 3], bbox_label=0)]))
    with pytest.raises(ValueError, match='no segmentation'):  # box-only data with masks on
        TRANSFORMS.build(dict(type='LoadAnnotations', with_mask=True))(
            dict(img_path='x', height=4, width=4, instances=[dict(bbox=[1, 2, 3, 4],
                                                                 bbox_label=0)]))
