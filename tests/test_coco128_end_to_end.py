"""coco128 (real COCO images with YOLO labels) through the whole data path.

Convert with ``tools/dataset_converters/yolo2coco.py``, load and validate with ``CocoDataset``,
run a flip + resize pipeline and check every box against the hand-transformed annotation,
browse with ``tools/analysis_tools/browse_dataset.py`` and check that each drawn box sits on
its object, and evaluate the ground truth against itself with ``CocoMetric`` (AP 1.0).
"""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData

from codetr.evaluation import CocoMetric
from codetr.registry import DATASETS
from codetr.structures import DetDataSample
from codetr.visualization import class_color

from .conftest import ROOT


@pytest.fixture(scope='module')
def coco128(shared_dir: Path, tmp_path_factory) -> dict:
    root = shared_dir / 'data' / 'coco128'
    out = tmp_path_factory.mktemp('coco128') / 'train.json'
    sys.path.insert(0, str(ROOT))
    from tools.dataset_converters.yolo2coco import main as yolo2coco
    assert yolo2coco(['--images', str(root / 'images' / 'train2017'),
                      '--labels', str(root / 'labels' / 'train2017'),
                      '--classes', str(root / 'classes.txt'), '--out', str(out)]) == 0
    classes = tuple(n.strip() for n in (root / 'classes.txt').read_text().splitlines() if n.strip())
    return dict(ann_file=str(out), img_dir=str(root / 'images' / 'train2017') + '/',
                classes=classes, label_dir=root / 'labels' / 'train2017')


def _dataset_cfg(coco128: dict, pipeline: list) -> dict:
    return dict(type='CocoDataset', ann_file=coco128['ann_file'],
                data_prefix=dict(img=coco128['img_dir']),
                metainfo=dict(classes=coco128['classes']), test_mode=True, pipeline=pipeline)


FLIP_RESIZE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=1.0),
    dict(type='Resize', scale=(320, 320), keep_ratio=True),
    dict(type='PackDetInputs'),
]


def test_loads_and_validates(coco128):
    dataset = DATASETS.build(_dataset_cfg(coco128, []))
    report = dataset.validation_report
    with_image = [p for p in coco128['label_dir'].glob('*.txt')
                  if (Path(coco128['img_dir']) / (p.stem + '.jpg')).exists()]
    rows = sum(len([ln for ln in p.read_text().splitlines() if ln.strip()]) for p in with_image)
    boxes = sum(len(dataset.get_data_info(i)['instances']) for i in range(len(dataset)))
    assert boxes == rows - report.degenerate_boxes
    assert report.unknown_category_anns == 0  # (a repeated image id would have raised)
    # 128 images, a few without any label file are still listed
    assert len(dataset) == len(list(Path(coco128['img_dir']).glob('*.jpg')))


def test_boxes_follow_flip_and_resize(coco128):
    dataset = DATASETS.build(_dataset_cfg(coco128, FLIP_RESIZE))
    for idx in range(0, len(dataset), 16):
        info = dataset.get_data_info(idx)
        packed = dataset[idx]
        sample = packed['data_samples']
        w_scale, h_scale = sample.scale_factor
        expected = np.array([ins['bbox'] for ins in info['instances'] if not ins['ignore_flag']],
                            dtype=np.float32).reshape(-1, 4)
        flipped = expected.copy()
        flipped[:, 0] = info['width'] - expected[:, 2]
        flipped[:, 2] = info['width'] - expected[:, 0]
        flipped *= np.array([w_scale, h_scale, w_scale, h_scale], dtype=np.float32)
        np.testing.assert_allclose(sample.gt_instances.bboxes.numpy(), flipped, atol=1e-3)
        assert packed['inputs'].shape[1:] == sample.img_shape


def test_browse_draws_each_box_on_its_object(coco128, tmp_path):
    config = tmp_path / 'coco128_browse.py'
    config.write_text(f'default_scope = "codetr"\n'
                      f'train_dataloader = dict(dataset={_dataset_cfg(coco128, FLIP_RESIZE)!r})\n')
    out_dir = tmp_path / 'browse'
    result = subprocess.run(
        [sys.executable, str(ROOT / 'tools/analysis_tools/browse_dataset.py'), str(config),
         '--output-dir', str(out_dir), '--max-images', '6'],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    pngs = sorted(out_dir.glob('*.png'))
    assert len(pngs) == 6
    dataset = DATASETS.build(_dataset_cfg(coco128, FLIP_RESIZE))
    checked = on_object = 0
    for png in pngs:
        idx = int(png.name.split('_')[0])
        gt = dataset[idx]['data_samples'].gt_instances
        drawn = cv2.imread(str(png))
        for box, label in zip(gt.bboxes.round().int().tolist(), gt.labels.tolist()):
            x1, y1, x2, y2 = box
            if x2 - x1 < 6 or y2 - y1 < 6:
                continue
            ym = (y1 + y2) // 2
            colour = np.array(class_color(label))
            # the left and right edges at mid-height carry the class colour
            for x in (min(x1, drawn.shape[1] - 1), min(x2, drawn.shape[1] - 1)):
                checked += 1
                on_object += int(np.abs(drawn[ym, x].astype(int) - colour).max() <= 3)
    assert checked > 20
    # overlapping boxes may paint over one another's edges; nearly all must be intact
    assert on_object / checked > 0.9, (on_object, checked)


def test_ground_truth_scores_ap_one(coco128):
    dataset = DATASETS.build(_dataset_cfg(coco128, []))
    metric = CocoMetric(ann_file=coco128['ann_file'])
    metric.dataset_meta = dataset.metainfo
    samples = []
    for idx in range(len(dataset)):
        info = dataset.get_data_info(idx)
        kept = [ins for ins in info['instances'] if not ins['ignore_flag']]
        pred = InstanceData(
            bboxes=torch.tensor([ins['bbox'] for ins in kept], dtype=torch.float32).reshape(-1, 4),
            scores=torch.ones(len(kept)),
            labels=torch.tensor([ins['bbox_label'] for ins in kept], dtype=torch.long))
        sample = DetDataSample(metainfo=dict(img_id=info['img_id'],
                                             ori_shape=(info['height'], info['width'])))
        sample.pred_instances = pred
        samples.append(sample.to_dict())
    metric.process({}, samples)
    results = metric.compute_metrics(metric.results)
    assert results['bbox_mAP'] == pytest.approx(1.0)
    assert results['bbox_mAP_50'] == pytest.approx(1.0)
