"""CocoDataset: data_list contract, class mapping by name, ignore flags, filters."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from codetr.datasets import COCO_CLASSES, CocoDataset
from codetr.registry import DATASETS

# Category ids and order deliberately differ from the config's class order.
CATEGORIES = [dict(id=5, name='dog'), dict(id=2, name='cat'), dict(id=9, name='bird')]
IMAGES = [dict(id=1, file_name='a.jpg', width=100, height=80),
          dict(id=2, file_name='b.jpg', width=20, height=20),   # below min_size 32
          dict(id=3, file_name='c.jpg', width=64, height=64),   # only a crowd box
          dict(id=4, file_name='d.jpg', width=64, height=48)]   # no annotation
ANNOTATIONS = [
    dict(id=1, image_id=1, category_id=5, bbox=[10, 10, 20, 30], iscrowd=0),
    dict(id=2, image_id=1, category_id=2, bbox=[0, 0, 5, 5], iscrowd=1),
    dict(id=3, image_id=2, category_id=2, bbox=[1, 2, 3, 4], iscrowd=0),
    dict(id=4, image_id=3, category_id=5, bbox=[4, 4, 8, 8], iscrowd=1),
    dict(id=5, image_id=1, category_id=9, bbox=[50, 50, 10, 10], iscrowd=0),  # bird
]


def write_coco(path: Path, images=IMAGES, annotations=ANNOTATIONS,
               categories=CATEGORIES) -> Path:
    path.write_text(json.dumps(dict(images=images, annotations=annotations,
                                    categories=categories)))
    return path


def build(tmp_path: Path, **kwargs) -> CocoDataset:
    ann_file = write_coco(tmp_path / 'ann.json')
    cfg = dict(ann_file=str(ann_file), data_root=str(tmp_path), data_prefix=dict(img='imgs/'),
               metainfo=dict(classes=('cat', 'dog')), test_mode=True)
    cfg.update(kwargs)
    return CocoDataset(**cfg)


def test_data_list_contract_and_name_mapping(tmp_path):
    ds = build(tmp_path)
    assert ds.cat2label == {2: 0, 5: 1}
    assert ds.cat_ids == [2, 5]
    assert len(ds) == 4
    info = ds.get_data_info(0)
    assert info['img_path'] == str(tmp_path / 'imgs' / 'a.jpg')
    assert (info['img_id'], info['height'], info['width']) == (1, 80, 100)
    assert info['instances'] == [
        dict(bbox=[10.0, 10.0, 30.0, 40.0], bbox_label=1, ignore_flag=0),   # dog
        dict(bbox=[0.0, 0.0, 5.0, 5.0], bbox_label=0, ignore_flag=1)]       # crowd cat
    assert ds.get_cat_ids(0) == [1, 0]
    assert ds.get_data_info(3)['instances'] == []
    assert ds.validation_report.unselected_class_anns == 1  # the bird
    assert ds.metainfo['classes'] == ('cat', 'dog')
    assert len(ds.metainfo['palette']) == 2


def test_filter_cfg_only_when_training(tmp_path):
    filt = dict(filter_empty_gt=True, min_size=32)
    train = build(tmp_path, test_mode=False, filter_cfg=filt)
    assert [train.get_data_info(i)['img_id'] for i in range(len(train))] == [1]
    assert train.validation_report.filtered_images == 3
    keep_empty = build(tmp_path, test_mode=False, filter_cfg=dict(filter_empty_gt=False,
                                                                  min_size=32))
    assert [keep_empty.get_data_info(i)['img_id'] for i in range(len(keep_empty))] == [1, 3, 4]
    assert len(build(tmp_path, test_mode=True, filter_cfg=filt)) == 4


def test_unknown_filter_key_raises(tmp_path):
    with pytest.raises(ValueError, match='filter_empty'):
        build(tmp_path, filter_cfg=dict(filter_empty=True))


def test_default_metainfo_is_coco80():
    assert len(CocoDataset.METAINFO['classes']) == 80 == len(CocoDataset.METAINFO['palette'])
    assert CocoDataset.METAINFO['classes'][:3] == COCO_CLASSES[:3] == ('person', 'bicycle',
                                                                        'car')


def test_built_from_registry_and_loads_image(tmp_path):
    (tmp_path / 'imgs').mkdir()
    cv2.imwrite(str(tmp_path / 'imgs' / 'a.jpg'), np.zeros((80, 100, 3), np.uint8))
    write_coco(tmp_path / 'ann.json')
    ds = DATASETS.build(dict(type='CocoDataset', ann_file='ann.json', data_root=str(tmp_path),
                             data_prefix=dict(img='imgs/'), test_mode=True,
                             metainfo=dict(classes=['dog', 'cat'])))
    assert isinstance(ds, CocoDataset)
    assert ds.cat2label == {5: 0, 2: 1}
    assert ds[0]['instances'][0]['bbox_label'] == 0


def test_missing_ann_file_says_what_to_check(tmp_path):
    with pytest.raises(FileNotFoundError, match='ann_file and data_root'):
        CocoDataset(ann_file=str(tmp_path / 'nope.json'))
