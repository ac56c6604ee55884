"""LVIS v1 and Objects365 specifics: names from the file, paths, eval fields, skipping."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import codetr.datasets.coco as coco_module
from codetr.datasets import LVISV1Dataset, Objects365V1Dataset, Objects365V2Dataset

# Listed out of id order: classes must come out in id order.
CATS = [dict(id=3, name='zebra'), dict(id=1, name='aerosol_can'), dict(id=2, name='apple')]


def write(path: Path, images, annotations) -> str:
    path.write_text(json.dumps(dict(images=images, annotations=annotations, categories=CATS)))
    return str(path)


def touch_image(path: Path, w: int = 40, h: int = 30) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((h, w, 3), np.uint8))


def test_lvis_classes_paths_and_eval_fields(tmp_path, monkeypatch):
    warnings = []
    monkeypatch.setattr(coco_module, 'print_log', lambda msg, **kw: warnings.append(msg))
    images = [dict(id=7, width=40, height=30, coco_url='http://images.cocodataset.org/'
                   'val2017/000000000007.jpg', not_exhaustive_category_ids=[2],
                   neg_category_ids=[3, 1]),
              dict(id=8, width=40, height=30,
                   coco_url='http://images.cocodataset.org/train2017/000000000008.jpg')]
    anns = [dict(id=1, image_id=7, category_id=2, bbox=[1, 2, 3, 4], area=12)]
    assert LVISV1Dataset.METAINFO['classes'] == ()  # filled from the file when loading
    ds = LVISV1Dataset(ann_file=write(tmp_path / 'lvis.json', images, anns),
                       data_root=str(tmp_path), test_mode=True)
    assert ds.metainfo['classes'] == ('aerosol_can', 'apple', 'zebra')
    assert len(ds.metainfo['palette']) == 3
    assert warnings == [f'{tmp_path / "lvis.json"} has 3 categories; the published '
                        f'LVISV1Dataset file has 1203.']
    assert ds.cat2label == {1: 0, 2: 1, 3: 2}
    first, second = ds.get_data_info(0), ds.get_data_info(1)
    assert first['img_path'] == str(tmp_path / 'val2017' / '000000000007.jpg')
    assert second['img_path'] == str(tmp_path / 'train2017' / '000000000008.jpg')
    assert first['not_exhaustive_category_ids'] == [2]
    assert first['neg_category_ids'] == [3, 1]
    assert second['neg_category_ids'] == []
    # LVIS has no iscrowd field: every box is a normal one.
    assert first['instances'] == [dict(bbox=[1.0, 2.0, 4.0, 6.0], bbox_label=1, ignore_flag=0)]


def test_lvis_custom_classes_select_by_name(tmp_path):
    images = [dict(id=1, width=40, height=30, coco_url='x/val2017/1.jpg')]
    ds = LVISV1Dataset(ann_file=write(tmp_path / 'lvis.json', images, []),
                       metainfo=dict(classes=('zebra', 'apple')), test_mode=True)
    assert ds.cat2label == {3: 0, 2: 1}


def test_objects365_v1_skips_and_counts_missing_images(tmp_path):
    images = [dict(id=i, file_name=f'obj365_{i}.jpg', width=40, height=30) for i in (1, 2, 3)]
    touch_image(tmp_path / 'train' / 'obj365_1.jpg')
    touch_image(tmp_path / 'train' / 'obj365_3.jpg')
    ds = Objects365V1Dataset(ann_file=write(tmp_path / 'o365.json', images, []),
                             data_root=str(tmp_path), data_prefix=dict(img='train/'),
                             test_mode=True)
    assert [ds.get_data_info(i)['img_id'] for i in range(len(ds))] == [1, 3]
    assert ds.validation_report.missing_images == 1
    assert ds.metainfo['classes'] == ('aerosol_can', 'apple', 'zebra')


def test_objects365_with_no_image_on_disk_raises(tmp_path):
    images = [dict(id=1, file_name='a.jpg', width=40, height=30)]
    with pytest.raises(FileNotFoundError, match='1 image\\(s\\) listed in'):
        Objects365V1Dataset(ann_file=write(tmp_path / 'o365.json', images, []),
                            data_root=str(tmp_path), test_mode=True)


def test_objects365_v2_uses_patch_folder_and_name(tmp_path):
    images = [dict(id=1, file_name='images/v1/patch0/objects365_v1_1.jpg', width=40, height=30),
              dict(id=2, file_name='images/v2/patch16/objects365_v2_2.jpg', width=40,
                   height=30)]
    touch_image(tmp_path / 'train' / 'patch16' / 'objects365_v2_2.jpg')
    ds = Objects365V2Dataset(ann_file=write(tmp_path / 'o365v2.json', images, []),
                             data_root=str(tmp_path), data_prefix=dict(img='train/'),
                             test_mode=True)
    assert len(ds) == 1 and ds.validation_report.missing_images == 1
    assert ds.get_data_info(0)['img_path'] == str(
        tmp_path / 'train' / 'patch16' / 'objects365_v2_2.jpg')
