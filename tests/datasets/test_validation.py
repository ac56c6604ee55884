"""Annotation-file problems: each ends in an error naming the file and the entry, or in a
counted warning naming the first entries by id (hand-made files in tmp_path)."""
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import codetr.datasets.validation as validation
from codetr.datasets import CocoDataset, LVISV1Dataset
from codetr.datasets.validation import ValidationReport, clip_box, count_duplicates

CATS = [dict(id=1, name='cat'), dict(id=2, name='dog')]
CLASSES = dict(classes=('cat', 'dog'))


def write(path: Path, images, annotations, categories=CATS) -> str:
    path.write_text(json.dumps(dict(images=images, annotations=annotations,
                                    categories=categories)))
    return str(path)


def img(i: int, w: int = 100, h: int = 50, name: str | None = None) -> dict:
    return dict(id=i, file_name=name or f'{i}.jpg', width=w, height=h)


def ann(i: int, image_id: int, bbox, cat: int = 1) -> dict:
    return dict(id=i, image_id=image_id, category_id=cat, bbox=bbox, iscrowd=0)


@pytest.fixture
def logged(monkeypatch) -> list[tuple[str, int]]:
    """(message, level) of every line the dataset checks log."""
    lines = []
    monkeypatch.setattr(validation, 'print_log',
                        lambda msg, **kw: lines.append((msg, kw.get('level'))))
    return lines


def build(path: str, **kwargs) -> CocoDataset:
    kwargs.setdefault('test_mode', True)
    return CocoDataset(ann_file=path, metainfo=CLASSES, **kwargs)


def test_every_rule_is_counted_named_and_logged_once(tmp_path, logged):
    images = [img(1), img(2), img(3)]                                  # 3 has no anns
    anns = [ann(1, 1, [10, 10, 5, 5]),          # fine
            ann(2, 1, [10, 10, 0, 5]),          # degenerate: w = 0
            ann(3, 1, [90, 40, 20, 20]),        # clipped to [90, 40, 100, 50]
            ann(4, 1, [-5, -5, 10, 10]),        # clipped to [0, 0, 5, 5]
            ann(5, 1, [200, 10, 5, 5]),         # wholly outside: degenerate, not clipped
            ann(6, 2, [1, 1, 2, 2], cat=7),     # unknown category id
            ann(6, 2, [1, 1, 2, 2]),            # repeats annotation id 6, kept
            ann(8, 99, [1, 1, 2, 2]),           # unknown image id
            ann(9, 1, [float('nan'), 1, 2, 2]),  # NaN
            ann(10, 2, [1, 1, float('inf'), 2])]  # infinite width
    ds = build(write(tmp_path / 'a.json', images, anns))
    expected = ValidationReport(
        ann_file=str(tmp_path / 'a.json'), images=3, annotations=10, nonfinite_boxes=2,
        degenerate_boxes=2, clipped_boxes=2, unknown_category_anns=1, unknown_image_anns=1,
        duplicate_ann_ids=1, images_without_anns=1)
    assert ds.validation_report == expected
    assert ds.validation_report.examples == {
        'nonfinite_boxes': [9, 10], 'degenerate_boxes': [2, 5], 'clipped_boxes': [3, 4],
        'unknown_category_anns': ['6 (category_id 7)'],
        'unknown_image_anns': ['8 (image_id 99)'], 'duplicate_ann_ids': [6]}
    assert len(logged) == 1 and logged[0][1] == logging.WARNING
    msg = logged[0][0]
    assert 'images=3 annotations=10 nonfinite_boxes=2 degenerate_boxes=2' in msg
    assert 'nonfinite_boxes=2: annotation ids 9, 10 dropped: a bbox coordinate is NaN' in msg
    assert 'unknown_category_anns=1: annotation ids 6 (category_id 7) dropped' in msg
    assert 'unknown_image_anns=1: annotation ids 8 (image_id 99) dropped' in msg
    assert 'duplicate_ann_ids=1: annotation ids 6 repeat an earlier id' in msg
    boxes = [i['bbox'] for i in ds.get_data_info(0)['instances']]
    assert boxes == [[10, 10, 15, 15], [90, 40, 100, 50], [0, 0, 5, 5]]
    assert len(ds.get_data_info(1)['instances']) == 1


def test_only_the_first_five_are_named(tmp_path, logged):
    anns = [ann(i, 1, [1, 1, float('nan'), 2]) for i in range(100, 107)]
    ds = build(write(tmp_path / 'a.json', [img(1)], anns))
    assert ds.validation_report.nonfinite_boxes == 7
    assert 'annotation ids 100, 101, 102, 103, 104 and 2 more dropped' in logged[0][0]


def test_rounding_clips_are_info_and_a_clean_file_one_line(tmp_path, logged):
    """Clipping by under a pixel (float rounding in converted files) is no warning."""
    build(write(tmp_path / 'a.json', [img(1)], [ann(1, 1, [1, 1, 99.5, 49.5])]))
    assert len(logged) == 1 and logged[0][1] == logging.INFO
    assert logged[0][0].endswith('clipped_boxes=1: annotation ids 1 clipped to the image border')
    build(write(tmp_path / 'b.json', [img(1)], [ann(1, 1, [1, 1, 9, 9])]))
    assert logged[1][1] == logging.INFO and '\n' not in logged[1][0]


def test_nan_and_inf_boxes_never_reach_the_model(tmp_path, logged):
    """NaN / Infinity literals (which Python's json reads) through dataset + pipeline."""
    (tmp_path / 'imgs').mkdir()
    cv2.imwrite(str(tmp_path / 'imgs' / '1.jpg'), np.zeros((50, 100, 3), np.uint8))
    anns = [ann(1, 1, [10, 10, 5, 5]), ann(2, 1, [float('nan')] * 4),
            ann(3, 1, [float('-inf'), 1, 5, 5]), ann(4, 1, [1, 1, 5, float('inf')])]
    path = write(tmp_path / 'a.json', [img(1)], anns)
    assert 'NaN' in Path(path).read_text() and 'Infinity' in Path(path).read_text()
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                dict(type='PackDetInputs')]
    ds = build(path, data_prefix=dict(img=str(tmp_path / 'imgs')), pipeline=pipeline,
               test_mode=False)
    sample = ds[0]['data_samples']
    assert sample.gt_instances.bboxes.tolist() == [[10, 10, 15, 15]]
    assert ds.validation_report.examples['nonfinite_boxes'] == [2, 3, 4]


def test_load_annotations_drops_nonfinite_boxes_of_any_dataset(monkeypatch):
    import codetr.datasets.transforms.loading as loading
    from codetr.registry import TRANSFORMS

    lines = []
    monkeypatch.setattr(loading, 'print_log', lambda msg, **kw: lines.append(msg))
    results = dict(img_path='x.jpg', img_id=3, instances=[
        dict(bbox=[1, 2, 3, 4], bbox_label=1, ignore_flag=0),
        dict(bbox=[float('nan'), 2, 3, 4], bbox_label=0, ignore_flag=0),
        dict(bbox=[1, 2, float('inf'), 4], bbox_label=0, ignore_flag=1)])
    out = TRANSFORMS.build(dict(type='LoadAnnotations'))(results)
    assert out['gt_bboxes'].tolist() == [[1, 2, 3, 4]]
    assert out['gt_bboxes_labels'].tolist() == [1] and out['gt_ignore_flags'].tolist() == [False]
    assert len(lines) == 1 and 'x.jpg (image id 3): dropped 2 box(es) with a NaN' in lines[0]


def test_the_detector_refuses_a_nonfinite_box():
    """The last guard: CoDETR's target check names the image (a custom transform's NaN)."""
    from types import SimpleNamespace

    from mmengine.structures import InstanceData

    from codetr.models.detectors.co_detr import CoDETR
    from codetr.structures import DetDataSample

    sample = DetDataSample(metainfo=dict(img_path='bad.jpg'))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[1.0, 2.0, float('nan'), 4.0]]),
                                       labels=torch.tensor([0]))
    with pytest.raises(ValueError, match=r"NaN or infinite coordinates .*\['bad.jpg'\]"):
        CoDETR._check_labels(SimpleNamespace(num_classes=2), [sample])


def test_duplicate_image_ids_raise_naming_the_id(tmp_path):
    path = write(tmp_path / 'a.json', [img(1), img(2), img(2, name='again.jpg')], [])
    with pytest.raises(ValueError) as err:
        build(path)
    msg = str(err.value)
    assert msg.startswith(f'{path} repeats image ids (1 of them): id 2 at positions [1, 2] '
                          "(file names '2.jpg', 'again.jpg')")
    assert 'give every image its own id' in msg


def test_file_without_images_says_so(tmp_path):
    path = write(tmp_path / 'a.json', [], [])
    with pytest.raises(ValueError, match=f'{path} has no images: its "images" list is empty'):
        build(path)


def test_invalid_json_names_file_line_and_column(tmp_path):
    path = tmp_path / 'a.json'
    path.write_text('{"images": [\n  {"id": 1, "width": 10,}\n]}')
    with pytest.raises(ValueError, match=rf'{path} is not valid JSON: .* at line 2, column 25'):
        build(str(path))


@pytest.mark.parametrize('key', ['images', 'annotations', 'categories'])
def test_missing_top_level_key_names_it(tmp_path, key):
    content = dict(images=[img(1)], annotations=[], categories=CATS)
    del content[key]
    path = tmp_path / 'a.json'
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=rf"{path} has no '{key}' key"):
        build(str(path), test_mode=False)


def test_unlabelled_image_list_loads_in_test_mode(tmp_path):
    path = tmp_path / 'a.json'
    path.write_text(json.dumps(dict(images=[img(1), img(2)], categories=CATS)))
    ds = build(str(path), test_mode=True)
    assert len(ds) == 2 and ds.get_data_info(0)['instances'] == []


@pytest.mark.parametrize('content, match', [
    ([1, 2], 'holds a JSON list; a COCO annotation file is an object'),
    (dict(images={}, annotations=[], categories=CATS), '"images" is a JSON dict, not a list'),
    (dict(images=[img(1)], annotations=[], categories=[]), 'has no categories'),
    (dict(images=[dict(file_name='a.jpg')], annotations=[], categories=CATS),
     r'image #0 \(no "id"\) has no \[\'id\'\] field'),
    (dict(images=[img(1)], annotations=[], categories=CATS + [dict(id=2, name='cow')]),
     "two categories with id 2 \\('dog' and 'cow'\\)"),
    (dict(images=[img(1)], annotations=[], categories=[dict(id=1)]),
     r"category id 1 has no \['name'\] field"),
    (dict(images=[dict(id=5, width=10, height=10)], annotations=[], categories=CATS),
     'image id 5 in .* has no "file_name"'),
    (dict(images=[img(1, w=0)], annotations=[], categories=CATS),
     'image id 1 in .* needs positive "width" and "height"'),
    (dict(images=[img(1)], annotations=[[1, 2]], categories=CATS),
     'annotation record #0 is a JSON list'),
])
def test_malformed_records_raise_naming_the_entry(tmp_path, content, match):
    path = tmp_path / 'a.json'
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=match) as err:
        build(str(path))
    assert str(path) in str(err.value)


def test_malformed_bbox_raises_with_annotation_id(tmp_path):
    path = write(tmp_path / 'a.json', [img(1)], [ann(42, 1, [1, 2, 3])])
    with pytest.raises(ValueError, match='annotation id 42 .* bbox'):
        build(path)
    path = write(tmp_path / 'b.json', [img(1)], [ann(43, 1, [1, 2, '3', 4])])
    with pytest.raises(ValueError, match='annotation id 43 .* bbox'):
        build(path)


def test_filters_that_remove_every_image_say_why(tmp_path):
    path = write(tmp_path / 'a.json', [img(1), img(2)], [])
    with pytest.raises(ValueError, match=r'removed all 2 images of .*a.json \(2 have no '
                                         r'annotation at all\)'):
        build(path, test_mode=False, filter_cfg=dict(filter_empty_gt=True))


def test_lvis_file_gets_the_same_checks(tmp_path):
    cats = [dict(id=1, name='a', frequency='f')]
    images = [dict(id=1, width=10, height=10, coco_url='x/val2017/1.jpg')] * 2
    path = write(tmp_path / 'lvis.json', images, [], categories=cats)
    with pytest.raises(ValueError, match='repeats image ids'):
        LVISV1Dataset(ann_file=path, test_mode=True)


# ------------------------------------------------------ real image size vs the json's
def test_real_image_size_wins_over_the_json(tmp_path, monkeypatch, logged):
    """The json says 100 x 50; the file is 60 x 40. Boxes keep their pixel coordinates and
    are clipped to the real image; a box beyond it is dropped."""
    import codetr.datasets.transforms.loading as loading

    lines = []
    monkeypatch.setattr(loading, 'print_log', lambda msg, **kw: lines.append(msg))
    monkeypatch.setattr(loading, '_size_warnings', set())
    (tmp_path / 'imgs').mkdir()
    cv2.imwrite(str(tmp_path / 'imgs' / '1.jpg'), np.zeros((40, 60, 3), np.uint8))
    anns = [ann(1, 1, [10, 10, 20, 20]), ann(2, 1, [50, 30, 30, 15]), ann(3, 1, [70, 5, 10, 10])]
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                dict(type='PackDetInputs', meta_keys=('img_path', 'ori_shape', 'img_shape'))]
    ds = build(write(tmp_path / 'a.json', [img(1)], anns),
               data_prefix=dict(img=str(tmp_path / 'imgs')), pipeline=pipeline)
    sample = ds[0]['data_samples']
    assert sample.ori_shape == (40, 60)
    assert sample.gt_instances.bboxes.tolist() == [[10, 10, 30, 30], [50, 30, 60, 40]]
    size_msg = next(m for m in lines if 'pixels' in m)
    assert (f'image {tmp_path / "imgs" / "1.jpg"} (image id 1) is 60x40 pixels but its '
            'annotation says width=100, height=50') in size_msg
    assert 'using the real size' in size_msg
    assert any('dropped 0 box(es) with a NaN or infinite coordinate and 1 empty' in m
               for m in lines)
    ds[0]
    assert sum('pixels' in m for m in lines) == 1  # once per image and process


def test_helpers():
    assert count_duplicates([1, 1, 1, 2, 3, 3]) == 3
    report = ValidationReport()
    assert clip_box(dict(id=1, bbox=[-1, 2, 4, 100]), 10, 20, report, 'f') == [0, 2, 3, 20]
    assert clip_box(dict(id=2, bbox=[1, 2, 4, -1]), 10, 20, report, 'f') is None
    assert clip_box(dict(id=3, bbox=[1, 2, float('nan'), 1]), 10, 20, report, 'f') is None
    assert (report.clipped_boxes, report.degenerate_boxes, report.nonfinite_boxes) == (1, 1, 1)
    assert report.max_clip_px == 82  # 2 + 100 - 20
    assert report.suspicious
