"""The synthetic shapes dataset: determinism, layout, box validity and tightness."""
import json
import time

import numpy as np
import pytest
import torch

from codetr.datasets import SYNTHETIC_CLASSES, CocoDataset, make_synthetic_dataset
from codetr.datasets.synthetic import PLAIN_BACKGROUND, render_image, visible_objects
from codetr.structures import bbox_overlaps
from tools.misc.make_synthetic_dataset import main as make_main


@pytest.fixture(scope='module')
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp('synth')
    start = time.perf_counter()
    files = make_synthetic_dataset(out, num_train=64, num_val=4, seed=3)
    elapsed = time.perf_counter() - start
    return out, files, elapsed


def test_fast_and_laid_out_as_documented(synth):
    out, files, elapsed = synth
    assert elapsed < 10  # 68 images, up to 256 px
    assert files == {'train': out / 'annotations/instances_train.json',
                     'val': out / 'annotations/instances_val.json'}
    assert len(list((out / 'train').glob('*.png'))) == 64
    assert len(list((out / 'val').glob('*.png'))) == 4


def test_counts_classes_and_sizes(synth):
    out, files, _ = synth
    coco = json.loads(files['train'].read_text())
    assert SYNTHETIC_CLASSES == ('circle', 'square', 'triangle', 'star', 'cross', 'ring',
                                 'hexagon', 'ellipse')
    assert [c['name'] for c in coco['categories']] == list(SYNTHETIC_CLASSES)
    per_image = np.bincount([a['image_id'] for a in coco['annotations']], minlength=65)[1:]
    assert per_image.min() >= 1 and per_image.max() <= 8
    assert all(128 <= i['width'] <= 256 and 128 <= i['height'] <= 256 for i in coco['images'])
    assert len({(i['width'], i['height']) for i in coco['images']}) > 10
    sides = [max(a['bbox'][2:]) for a in coco['annotations']]
    assert min(sides) <= 12 and max(sides) >= 64  # small (~8 px) to large (~half the image)
    assert len({a['category_id'] for a in coco['annotations']}) == 8


def test_boxes_inside_images_and_some_overlap(synth):
    _, files, _ = synth
    coco = json.loads(files['train'].read_text())
    images = {i['id']: i for i in coco['images']}
    overlapping = 0
    for img_id, img in images.items():
        boxes = [a['bbox'] for a in coco['annotations'] if a['image_id'] == img_id]
        for x, y, w, h in boxes:
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= img['width'] and y + h <= img['height']
        xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in boxes], np.float32)
        iou = bbox_overlaps(torch.from_numpy(xyxy), torch.from_numpy(xyxy))
        overlapping += int((iou.triu(diagonal=1) > 0).any())
    assert overlapping >= 5  # occlusion happens


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    for name, seed in (('a', 5), ('b', 5), ('c', 6)):
        assert make_main(['--out', str(tmp_path / name), '--train', '3', '--val', '2',
                          '--seed', str(seed), '--min-size', '64', '--max-size', '96']) == 0
    files = sorted(p.relative_to(tmp_path / 'a') for p in (tmp_path / 'a').rglob('*.*'))
    assert len(files) == 3 + 2 + 2
    for rel in files:
        assert (tmp_path / 'a' / rel).read_bytes() == (tmp_path / 'b' / rel).read_bytes()
    rel = 'annotations/instances_train.json'
    assert (tmp_path / 'a' / rel).read_bytes() != (tmp_path / 'c' / rel).read_bytes()


def test_box_tightly_encloses_an_unoccluded_shape():
    checked = 0
    for seed in range(60):
        image, objects = render_image(np.random.default_rng(seed), 96, 128, plain=True)
        if len(objects) != 1:
            continue
        ys, xs = np.nonzero((image != PLAIN_BACKGROUND).any(axis=2))
        drawn = [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
        assert np.abs(np.array(drawn) - objects[0]['bbox']).max() <= 1
        checked += 1
    assert checked >= 5


def test_loads_as_a_coco_dataset(synth):
    out, files, _ = synth
    ds = CocoDataset(ann_file=str(files['val']), data_root=str(out), data_prefix=dict(img='val/'),
                     metainfo=dict(classes=SYNTHETIC_CLASSES), check_files=True, test_mode=True)
    assert len(ds) == 4
    report = ds.validation_report
    assert (report.clipped_boxes, report.degenerate_boxes, report.images_without_anns) == (0, 0, 0)


def test_bad_sizes_raise(tmp_path):
    with pytest.raises(ValueError, match='min_size <= max_size'):
        make_synthetic_dataset(tmp_path, 1, 1, min_size=200, max_size=100)


def test_objects_hidden_more_than_70_percent_are_dropped():
    def box_mask(x1, x2):
        mask = np.zeros((10, 10), bool)
        mask[:, x1:x2] = True
        return mask
    # Object 0 (10 columns) is hidden 8/10 by object 1 -> dropped; object 1 is hidden
    # 2/8 by object 2 -> kept; the empty object 3 is dropped; the last is never hidden.
    masks = [box_mask(0, 10), box_mask(2, 10), box_mask(0, 4), box_mask(0, 0)]
    assert visible_objects(masks) == [1, 2]
    assert visible_objects([box_mask(0, 10), box_mask(0, 7)]) == [0, 1]  # 70 % hidden: kept


# sha256 of the decoded pixels and the (image, category, bbox, area) of every annotation of
# make_synthetic_dataset(num_train=6, num_val=2, seed=0, min_size=128, max_size=160), as
# written before the polygons were added: writing masks must not change the demo set.
BOXES_AND_PIXELS_SHA256 = '18fc7bd0622d6e58f16223860e4f83299de6f6c7080a4ccc55a69fa81225f0b0'


def test_masks_leave_the_demo_images_and_boxes_unchanged(tmp_path):
    import hashlib

    import cv2

    files = make_synthetic_dataset(tmp_path, num_train=6, num_val=2, seed=0, min_size=128,
                                   max_size=160)
    digest = hashlib.sha256()
    for split in ('train', 'val'):
        for path in sorted((tmp_path / split).glob('*.png')):
            digest.update(cv2.imread(str(path)).tobytes())
        coco = json.loads(files[split].read_text())
        digest.update(json.dumps([(a['image_id'], a['category_id'], a['bbox'], a['area'])
                                  for a in coco['annotations']]).encode())
        assert all(len(a['segmentation']) == 1 for a in coco['annotations'])
    assert digest.hexdigest() == BOXES_AND_PIXELS_SHA256


@pytest.mark.parametrize('name', SYNTHETIC_CLASSES)
def test_polygon_outlines_the_painted_shape(name):
    """Rasterised (pycocotools) outline vs the pixels cv2 paints, over random placements."""
    from codetr.datasets.synthetic import _random_object, shape_mask, shape_polygon
    from codetr.structures.mask import polygons_to_mask

    rng = np.random.default_rng(SYNTHETIC_CLASSES.index(name))
    ious = []
    for _ in range(25):
        spec = _random_object(rng, 120, 120)
        args = (spec['center'], spec['radius'], spec['angle'], spec['aspect'])
        painted = shape_mask(name, 120, 120, *args)
        polygon = shape_polygon(name, *args)
        raster = polygons_to_mask([polygon], 120, 120).astype(bool)
        ious.append((painted & raster).sum() / (painted | raster).sum())
        ys, xs = np.nonzero(painted)
        pts = np.asarray(polygon).reshape(-1, 2)
        np.testing.assert_allclose([*pts.min(0), *pts.max(0)],
                                   [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1)
    # measured: mean IoU 0.97..0.99 per class; the worst cases are shapes of ~8 px
    assert np.mean(ious) > 0.95 and min(ious) > 0.8


def test_annotation_polygon_box_matches_its_bbox(synth):
    _, files, _ = synth
    coco = json.loads(files['train'].read_text())
    for ann in coco['annotations']:
        pts = np.asarray(ann['segmentation'][0]).reshape(-1, 2)
        x, y, w, h = ann['bbox']
        np.testing.assert_allclose([*pts.min(0), *pts.max(0)], [x, y, x + w, y + h], atol=1)
