"""The annotation checks run at build time: counts, class-name errors, missing images."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import codetr.datasets.validation as validation
from codetr.datasets import CocoDataset
from codetr.datasets.validation import ValidationReport, clip_box, count_duplicates

CATS = [dict(id=1, name='cat'), dict(id=2, name='dog')]


def write(path: Path, images, annotations, categories=CATS) -> str:
    path.write_text(json.dumps(dict(images=images, annotations=annotations,
                                    categories=categories)))
    return str(path)


def img(i: int, w: int = 100, h: int = 50, name: str | None = None) -> dict:
    return dict(id=i, file_name=name or f'{i}.jpg', width=w, height=h)


def ann(i: int, image_id: int, bbox, cat: int = 1) -> dict:
    return dict(id=i, image_id=image_id, category_id=cat, bbox=bbox, iscrowd=0)


def test_every_rule_is_counted_and_logged_once(tmp_path, monkeypatch):
    images = [img(1), img(2), img(2, name='again.jpg'), img(3)]   # 2 repeats; 3 has no anns
    anns = [ann(1, 1, [10, 10, 5, 5]),          # fine
            ann(2, 1, [10, 10, 0, 5]),          # degenerate: w = 0
            ann(3, 1, [90, 40, 20, 20]),        # clipped to [90, 40, 100, 50]
            ann(4, 1, [-5, -5, 10, 10]),        # clipped to [0, 0, 5, 5]
            ann(5, 1, [200, 10, 5, 5]),         # wholly outside: degenerate, not clipped
            ann(6, 2, [1, 1, 2, 2], cat=7),     # unknown category id
            ann(6, 2, [1, 1, 2, 2]),            # repeats annotation id 6, kept
            ann(8, 99, [1, 1, 2, 2])]           # unknown image id
    logged = []
    monkeypatch.setattr(validation, 'print_log', lambda msg, **kw: logged.append(msg))
    ds = CocoDataset(ann_file=write(tmp_path / 'a.json', images, anns),
                     metainfo=dict(classes=('cat', 'dog')), test_mode=True)
    expected = ValidationReport(
        ann_file=str(tmp_path / 'a.json'), images=3, annotations=8, degenerate_boxes=2,
        clipped_boxes=2, unknown_category_anns=1, unknown_image_anns=1, duplicate_image_ids=1,
        duplicate_ann_ids=1, images_without_anns=1)
    assert ds.validation_report == expected
    assert len(logged) == 1 and 'images=3 annotations=8 degenerate_boxes=2' in logged[0]
    boxes = [i['bbox'] for i in ds.get_data_info(0)['instances']]
    assert boxes == [[10, 10, 15, 15], [90, 40, 100, 50], [0, 0, 5, 5]]
    assert ds.get_data_info(1)['img_path'] == '2.jpg'  # the first record of id 2 wins
    assert len(ds.get_data_info(1)['instances']) == 1


def test_config_classes_matching_none_list_both_sets(tmp_path):
    path = write(tmp_path / 'a.json', [img(1)], [])
    with pytest.raises(ValueError) as err:
        CocoDataset(ann_file=path, metainfo=dict(classes=('car', 'Dog')))
    msg = str(err.value)
    assert f"config classes not in {path}: ['car', 'Dog']" in msg
    assert "the file's categories are: ['cat', 'dog']" in msg
    assert 'fix metainfo=dict(classes=...)' in msg
    assert "'Dog' -> 'dog'" in msg


def test_default_coco_classes_on_a_custom_file_raise(tmp_path):
    with pytest.raises(ValueError, match="config classes not in .*'person'"):
        CocoDataset(ann_file=write(tmp_path / 'a.json', [img(1)], []))


def test_partial_class_match_names_only_the_missing(tmp_path):
    path = write(tmp_path / 'a.json', [img(1)], [])
    with pytest.raises(ValueError, match=r"config classes not in .*: \['horse'\];"):
        CocoDataset(ann_file=path, metainfo=dict(classes=('dog', 'horse')))


def test_repeated_config_class_raises(tmp_path):
    with pytest.raises(ValueError, match='repeat'):
        CocoDataset(ann_file=write(tmp_path / 'a.json', [img(1)], []),
                    metainfo=dict(classes=('dog', 'dog')))


def test_malformed_bbox_raises_with_annotation_id(tmp_path):
    path = write(tmp_path / 'a.json', [img(1)], [ann(42, 1, [1, 2, 3])])
    with pytest.raises(ValueError, match='annotation id 42 .* bbox'):
        CocoDataset(ann_file=path, metainfo=dict(classes=('cat',)))


def test_missing_images_with_check_files_fail_at_build(tmp_path):
    images = [img(i) for i in range(1, 8)]
    (tmp_path / 'imgs').mkdir()
    cv2.imwrite(str(tmp_path / 'imgs' / '1.jpg'), np.zeros((50, 100, 3), np.uint8))
    path = write(tmp_path / 'a.json', images, [])
    with pytest.raises(FileNotFoundError) as err:
        CocoDataset(ann_file=path, data_prefix=dict(img=str(tmp_path / 'imgs')),
                    metainfo=dict(classes=('cat',)), check_files=True, test_mode=True)
    msg = str(err.value)
    assert msg.startswith('6 image(s) listed in')
    assert str(tmp_path / 'imgs' / '2.jpg') in msg and 'and 1 more' in msg
    assert str(tmp_path / 'imgs' / '7.jpg') not in msg


def test_missing_image_without_check_files_fails_at_load(tmp_path):
    (tmp_path / 'imgs').mkdir()
    cv2.imwrite(str(tmp_path / 'imgs' / '1.jpg'), np.zeros((50, 100, 3), np.uint8))
    ds = CocoDataset(ann_file=write(tmp_path / 'a.json', [img(1), img(2)], []),
                     data_prefix=dict(img=str(tmp_path / 'imgs')),
                     metainfo=dict(classes=('cat',)), test_mode=True)
    assert ds[0]['img_id'] == 1
    with pytest.raises(FileNotFoundError, match=r"2\.jpg' \(dataset index 1, image id 2\)"):
        ds[1]


def test_helpers():
    assert count_duplicates([1, 1, 1, 2, 3, 3]) == 3
    report = ValidationReport()
    assert clip_box(dict(bbox=[-1, 2, 4, 100]), 10, 20, report, 'f') == [0, 2, 3, 20]
    assert clip_box(dict(bbox=[1, 2, 4, -1]), 10, 20, report, 'f') is None
    assert (report.clipped_boxes, report.degenerate_boxes) == (1, 1)
