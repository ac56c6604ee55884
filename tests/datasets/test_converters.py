"""YOLO -> COCO conversion: the real coco128 sample and malformed rows."""
import json

import cv2
import numpy as np
import pytest

from codetr.datasets import CocoDataset, yolo_to_coco
from codetr.datasets.converters import parse_yolo_row
from tools.dataset_converters.yolo2coco import main as yolo2coco_main


@pytest.fixture(scope='module')
def coco128(shared_dir, tmp_path_factory):
    root = shared_dir / 'data' / 'coco128'
    if not root.is_dir():
        pytest.skip(f'{root} is not present')
    names = [n for n in (root / 'classes.txt').read_text().splitlines() if n.strip()]
    out = tmp_path_factory.mktemp('coco128') / 'train.json'
    assert yolo2coco_main(['--images', str(root / 'images/train2017'),
                           '--labels', str(root / 'labels/train2017'),
                           '--classes', str(root / 'classes.txt'), '--out', str(out)]) == 0
    return root, names, out


def test_coco128_counts_and_hand_converted_boxes(coco128):
    root, names, ann_file = coco128
    assert len(names) == 80
    images = sorted((root / 'images/train2017').glob('*.jpg'))
    label_files = [root / 'labels/train2017' / f'{p.stem}.txt' for p in images]
    rows = sum(sum(1 for line in f.read_text().splitlines() if line.strip())
               for f in label_files if f.is_file())
    coco = json.loads(ann_file.read_text())
    assert len(coco['images']) == len(images) == 128
    assert len(coco['annotations']) == rows
    assert coco['categories'][45] == dict(id=46, name='bowl')
    ds = CocoDataset(ann_file=str(ann_file), data_root=str(root),
                     data_prefix=dict(img='images/train2017/'), metainfo=dict(classes=names),
                     test_mode=True)
    assert len(ds) == 128
    assert sum(len(ds.get_data_info(i)['instances']) for i in range(len(ds))) == rows
    # 000000000009.jpg is 640 x 480; its first row: "45 0.479492 0.688771 0.955609 0.5955".
    first = ds.get_data_info(0)
    assert first['img_path'].endswith('000000000009.jpg')
    inst = first['instances'][0]
    assert inst['bbox_label'] == 45
    assert inst['bbox'] == pytest.approx([1.08, 187.69008, 612.66976, 473.53008], abs=1e-4)
    # 000000000025.jpg is 640 x 426; first row "23 0.770336 0.489695 0.335891 0.697559".
    ann = next(a for a in coco['annotations']
               if coco['images'][a['image_id'] - 1]['file_name'] == '000000000025.jpg')
    assert ann['category_id'] == 24
    assert ann['bbox'] == pytest.approx([385.52992, 60.030003, 214.97024, 297.160134], abs=1e-4)
    assert ann['area'] == pytest.approx(214.97024 * 297.160134, rel=1e-9)
    assert ann['iscrowd'] == 0


def test_malformed_rows_are_reported_with_file_and_line(tmp_path):
    (tmp_path / 'images').mkdir()
    (tmp_path / 'labels').mkdir()
    cv2.imwrite(str(tmp_path / 'images' / 'a.png'), np.zeros((30, 40, 3), np.uint8))
    cv2.imwrite(str(tmp_path / 'images' / 'b.png'), np.zeros((10, 20, 3), np.uint8))
    (tmp_path / 'labels' / 'a.txt').write_text(
        '1 0.5 0.5 0.5 0.5\n'           # fine: [10, 7.5, 20, 15]
        '0 0.5 0.5 0.5\n'               # 4 fields
        '\n'                            # empty: silently skipped
        '2 0.5 0.5 0.1 0.1\n'           # class 2 of 2 classes
        'x 0.5 0.5 0.1 0.1\n'           # not a number
        '0 0.5 0.5 0.0 0.1\n'           # zero width
        '0 0.1 0.1 0.2 0.1 0.2 0.2\n')  # polygon row
    (tmp_path / 'labels' / 'orphan.txt').write_text('0 0.5 0.5 0.1 0.1\n')
    coco, problems = yolo_to_coco(tmp_path / 'images', tmp_path / 'labels', ['a', 'b'],
                                  image_prefix='imgs/')
    assert [(i['file_name'], i['width'], i['height']) for i in coco['images']] == [
        ('imgs/a.png', 40, 30), ('imgs/b.png', 20, 10)]
    assert coco['annotations'] == [dict(id=1, image_id=1, category_id=2,
                                        bbox=[10.0, 7.5, 20.0, 15.0], area=300.0, iscrowd=0)]
    a_txt = tmp_path / 'labels' / 'a.txt'
    assert [p.split(': ')[0] for p in problems] == [
        f'{a_txt}:2', f'{a_txt}:4', f'{a_txt}:5', f'{a_txt}:6', f'{a_txt}:7',
        str(tmp_path / 'labels' / 'orphan.txt')]
    assert 'class index 2 is outside 0..1' in problems[1]


def test_parse_yolo_row():
    assert parse_yolo_row('3 0.1 0.2 0.3 0.4', 4) == (3, [0.1, 0.2, 0.3, 0.4])
    assert parse_yolo_row('-1 0.1 0.2 0.3 0.4', 4).startswith('class index -1')


def test_sizes_come_from_the_headers_without_decoding(tmp_path, monkeypatch, capsys):
    """A PNG and a JPEG cut short after their headers still convert with the right sizes;
    an EXIF-rotated JPEG gets the size OpenCV decodes; a non-image is named and skipped."""
    from PIL import Image, ImageFile

    images, labels = tmp_path / 'images', tmp_path / 'labels'
    images.mkdir()
    labels.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in (('a.png', (30, 40)), ('b.jpg', (50, 70))):
        cv2.imwrite(str(images / name), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        data = (images / name).read_bytes()
        (images / name).write_bytes(data[:len(data) // 3])  # pixel data truncated
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: OpenCV decodes 20 wide x 60 high
    Image.fromarray(np.zeros((20, 60, 3), np.uint8)).save(images / 'c.jpg', exif=exif.tobytes())
    assert cv2.imread(str(images / 'c.jpg')).shape[:2] == (60, 20)
    (images / 'd.jpg').write_text('not an image')
    (labels / 'a.txt').write_text('0 0.5 0.5 0.5 0.5\n')

    def no_decoding(*args, **kwargs):
        raise AssertionError('an image was decoded')
    monkeypatch.setattr(ImageFile.ImageFile, 'load', no_decoding)  # decodes a file's pixels
    monkeypatch.setattr(cv2, 'imread', no_decoding)
    out = tmp_path / 'train.json'
    assert yolo2coco_main(['--images', str(images), '--labels', str(labels),
                           '--classes', str(_classes_file(tmp_path)), '--out', str(out)]) == 0
    coco = json.loads(out.read_text())
    assert [(i['file_name'], i['width'], i['height']) for i in coco['images']] == [
        ('a.png', 40, 30), ('b.jpg', 70, 50), ('c.jpg', 20, 60)]
    assert coco['annotations'][0]['bbox'] == [10.0, 7.5, 20.0, 15.0]
    captured = capsys.readouterr()
    assert f'{images / "d.jpg"}: cannot read the image size from its header' in captured.err
    assert 'yolo2coco: 4/4 images [' in captured.err  # the progress line


def _classes_file(tmp_path):
    path = tmp_path / 'classes.txt'
    path.write_text('a\nb\n')
    return path
