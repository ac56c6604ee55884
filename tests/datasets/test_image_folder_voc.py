"""images2coco (sizes from headers, EXIF-aware) and the Pascal VOC -> COCO converter."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from codetr.datasets.image_folder import image_size, images_to_coco
from codetr.datasets.voc import VOC_CLASSES, parse_voc_xml, voc_to_coco
from codetr.registry import DATASETS

ROOT = Path(__file__).resolve().parents[2]


def _tool(relative: str):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem + '_tool', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _image_folder(root: Path) -> Path:
    (root / 'imgs' / 'sub').mkdir(parents=True)
    cv2.imwrite(str(root / 'imgs' / 'b.png'), np.zeros((30, 50, 3), np.uint8))
    cv2.imwrite(str(root / 'imgs' / 'sub' / 'a.jpg'), np.zeros((40, 20, 3), np.uint8))
    # a JPEG stored 60 wide x 20 high with EXIF orientation 6 (rotate 90): loads 20 x 60
    rotated = Image.fromarray(np.zeros((20, 60, 3), np.uint8))
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(root / 'imgs' / 'c.jpg', exif=exif)
    (root / 'imgs' / 'notes.txt').write_text('not an image')
    (root / 'classes.txt').write_text('cat\ndog\n\n')
    return root


def test_images2coco_lists_sizes_without_decoding(tmp_path, monkeypatch):
    root = _image_folder(tmp_path)
    monkeypatch.setattr(cv2, 'imread', None)  # the converter must not decode pixels
    coco = _tool('tools/dataset_converters/images2coco.py').main(
        [str(root / 'imgs'), str(root / 'classes.txt'), str(root / 'out' / 'images.json')])
    assert coco['images'] == [
        dict(id=1, file_name='b.png', width=50, height=30),
        dict(id=2, file_name='c.jpg', width=20, height=60),
        dict(id=3, file_name='sub/a.jpg', width=20, height=40)]
    assert coco['annotations'] == []
    assert coco['categories'] == [dict(id=1, name='cat'), dict(id=2, name='dog')]
    assert json.loads((root / 'out' / 'images.json').read_text()) == coco
    monkeypatch.undo()
    assert cv2.imread(str(root / 'imgs' / 'c.jpg')).shape[:2] == (60, 20)  # as it loads


def test_unlabelled_json_loads_as_a_test_dataset(tmp_path):
    root = _image_folder(tmp_path)
    coco = images_to_coco(root / 'imgs', ['cat', 'dog'], exclude_extensions=['png'])
    assert [im['file_name'] for im in coco['images']] == ['c.jpg', 'sub/a.jpg']
    (root / 'images.json').write_text(json.dumps(coco))
    dataset = DATASETS.build(dict(type='CocoDataset', data_root=str(root),
                                  ann_file='images.json', data_prefix=dict(img='imgs/'),
                                  metainfo=dict(classes=('cat', 'dog')), test_mode=True,
                                  serialize_data=False))
    assert len(dataset) == 2 and dataset.get_data_info(1)['instances'] == []
    assert dataset.get_data_info(1)['img_path'].endswith('imgs/sub/a.jpg')


def test_image_folder_errors(tmp_path):
    root = _image_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        images_to_coco(root / 'nowhere', ['cat'])
    with pytest.raises(ValueError, match=r"class names \['cat'\] appear more than once"):
        images_to_coco(root / 'imgs', ['cat', 'cat'])
    (root / 'imgs' / 'broken.png').write_bytes(b'garbage')
    with pytest.raises(ValueError, match='broken.png cannot be read as an image'):
        image_size(root / 'imgs' / 'broken.png')
    (root / 'empty').mkdir()
    with pytest.raises(ValueError, match='no image files'):
        images_to_coco(root / 'empty', ['cat'])


def _xml(objects: str, size: str = '<size><width>100</width><height>80</height></size>') -> str:
    return f'<annotation><filename>x.jpg</filename>{size}{objects}</annotation>'


def _object(name: str, box: tuple, difficult: int | None = 0) -> str:
    tag = '' if difficult is None else f'<difficult>{difficult}</difficult>'
    xmin, ymin, xmax, ymax = box
    return (f'<object><name>{name}</name>{tag}<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>'
            f'<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>')


def _devkit(root: Path) -> Path:
    """VOC2007 with 2 train / 1 val image, VOC2012 with 1 train image and no val split."""
    files = {
        ('2007', '000001'): _xml(_object('dog', (48, 240, 195, 371)) +
                                 _object('person', (8, 12, 352, 498), difficult=1)),
        ('2007', '000002'): _xml(_object('train', (139.5, 200, 207, 301), difficult=None)),
        ('2007', '000003'): _xml('', size='<size><width>0</width><height>0</height></size>'),
        ('2012', '2008_000001'): _xml(_object('cat', (1, 1, 10, 20))),
    }
    for (year, name), text in files.items():
        (root / f'VOC{year}' / 'Annotations').mkdir(parents=True, exist_ok=True)
        (root / f'VOC{year}' / 'Annotations' / f'{name}.xml').write_text(text)
    (root / 'VOC2007' / 'JPEGImages').mkdir()
    cv2.imwrite(str(root / 'VOC2007' / 'JPEGImages' / '000003.jpg'),
                np.zeros((24, 32, 3), np.uint8))
    for year, split, names in (('2007', 'train', '000001\n000002\n'), ('2007', 'val', '000003'),
                               ('2012', 'train', '2008_000001\n')):
        (root / f'VOC{year}' / 'ImageSets' / 'Main').mkdir(parents=True, exist_ok=True)
        (root / f'VOC{year}' / 'ImageSets' / 'Main' / f'{split}.txt').write_text(names)
    return root


def test_voc_boxes_become_zero_based_and_difficult_becomes_crowd(tmp_path):
    root = _devkit(tmp_path / 'VOCdevkit')
    coco = voc_to_coco(root, [('2007', '000001'), ('2007', '000002'), ('2007', '000003')])
    assert coco['images'] == [
        dict(id=1, file_name='VOC2007/JPEGImages/000001.jpg', width=100, height=80),
        dict(id=2, file_name='VOC2007/JPEGImages/000002.jpg', width=100, height=80),
        dict(id=3, file_name='VOC2007/JPEGImages/000003.jpg', width=32, height=24)]
    dog, person, train = coco['annotations']
    assert dog == dict(id=1, image_id=1, category_id=VOC_CLASSES.index('dog') + 1,
                       bbox=[47.0, 239.0, 147.0, 131.0], area=147.0 * 131.0, iscrowd=0,
                       ignore=0)
    assert person['iscrowd'] == 1 and person['bbox'] == [7.0, 11.0, 344.0, 486.0]
    assert train['bbox'] == [138.5, 199.0, 67.5, 101.0] and train['iscrowd'] == 0
    assert [c['name'] for c in coco['categories']] == list(VOC_CLASSES)
    assert [c['id'] for c in coco['categories']] == list(range(1, 21))


def test_voc_errors_name_the_file(tmp_path):
    bad = tmp_path / 'bad.xml'
    bad.write_text(_xml(_object('unicorn', (1, 1, 5, 5))))
    with pytest.raises(ValueError, match=r"bad.xml: object class 'unicorn' is not one of"):
        parse_voc_xml(bad, {n: i for i, n in enumerate(VOC_CLASSES)})
    bad.write_text(_xml(_object('cat', (1, 'x', 5, 5))))
    with pytest.raises(ValueError, match=r"bad.xml: <ymin> is not a number: 'x'"):
        parse_voc_xml(bad, {'cat': 0})
    root = _devkit(tmp_path / 'VOCdevkit')
    with pytest.raises(FileNotFoundError, match='000009.xml is listed in VOC2007/ImageSets'):
        voc_to_coco(root, [('2007', '000009')])


def test_pascal_voc_tool_writes_every_year_and_split(tmp_path, capsys):
    root = _devkit(tmp_path / 'VOCdevkit')
    written = _tool('tools/dataset_converters/pascal_voc.py').main(
        [str(root), '-o', str(tmp_path / 'out')])
    assert [Path(p).name for p in written] == [
        'voc07_train.json', 'voc07_val.json', 'voc12_train.json', 'voc0712_train.json']
    union = json.loads((tmp_path / 'out' / 'voc0712_train.json').read_text())
    assert [im['file_name'] for im in union['images']] == [
        'VOC2007/JPEGImages/000001.jpg', 'VOC2007/JPEGImages/000002.jpg',
        'VOC2012/JPEGImages/2008_000001.jpg']
    assert [a['id'] for a in union['annotations']] == [1, 2, 3, 4]
    assert 'skipped: ' in capsys.readouterr().out  # e.g. VOC2012 has no val split here
