"""browse_dataset.py draws the GT boxes where the objects are AFTER the pipeline."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData

from codetr.structures import DetDataSample
from codetr.visualization import class_color

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'tools' / 'analysis_tools' / 'browse_dataset.py'
W, H = 96, 64
BACKGROUND = (40, 40, 40)
OBJECT = (255, 255, 255)  # white: not a class colour (those are saturated)
# (file, xyxy of the filled rectangle, category id); ids 5 -> 'red', 9 -> 'blue'.
OBJECTS = [('a.png', (10, 20, 40, 50), 5), ('b.png', (4, 6, 30, 40), 9)]
CLASSES = ('red', 'blue')


def make_dataset(root: Path) -> Path:
    (root / 'imgs').mkdir(parents=True)
    images, anns = [], []
    for img_id, (name, (x1, y1, x2, y2), cat) in enumerate(OBJECTS, start=1):
        img = np.full((H, W, 3), BACKGROUND, np.uint8)
        img[y1:y2, x1:x2] = OBJECT
        cv2.imwrite(str(root / 'imgs' / name), img)
        images.append(dict(id=img_id, file_name=name, width=W, height=H))
        anns.append(dict(id=img_id, image_id=img_id, category_id=cat, iscrowd=0,
                         bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1)))
    gt = dict(images=images, annotations=anns,
              categories=[dict(id=5, name='red'), dict(id=9, name='blue')])
    (root / 'ann.json').write_text(json.dumps(gt))
    config = root / 'browse_cfg.py'
    config.write_text(f"""
train_dataloader = dict(dataset=dict(
    type='CocoDataset', data_root={str(root)!r}, ann_file='ann.json',
    data_prefix=dict(img='imgs/'), metainfo=dict(classes={CLASSES!r}),
    pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
              dict(type='RandomFlip', prob=1.0), dict(type='PackDetInputs')]))
""")
    return config


def test_boxes_follow_the_flipped_objects(tmp_path):
    config = make_dataset(tmp_path / 'data')
    out_dir = tmp_path / 'out'
    result = subprocess.run([sys.executable, str(SCRIPT), str(config), '--output-dir',
                             str(out_dir), '--max-images', '5'],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in out_dir.glob('*.png'))
    assert files == ['00000_a.png', '00001_b.png']
    for (name, (x1, y1, x2, y2), cat), file in zip(OBJECTS, files):
        drawn = cv2.imread(str(out_dir / file))
        color = class_color(CLASSES.index({5: 'red', 9: 'blue'}[cat]))
        fx1, fx2 = W - x2, W - x1  # the horizontal flip moves the object here
        ymid, xmid = (y1 + y2) // 2, (fx1 + fx2) // 2
        for x, y in [(fx1, ymid), (fx2, ymid), (xmid, y2)]:  # left, right, bottom edges
            assert (drawn[y, x] == color).all(), (name, x, y, drawn[y, x])
        assert (drawn[ymid, xmid] == OBJECT).all()  # the object is flipped, not re-painted
        assert (drawn[ymid, x1] == BACKGROUND).all()  # no box where the object was


def load_tool():
    """The script as a module, for in-process tests (a subprocess costs ~10 s of imports)."""
    spec = importlib.util.spec_from_file_location('browse_dataset', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_missing_phase_dataloader_raises(tmp_path):
    config = make_dataset(tmp_path / 'data')
    with pytest.raises(KeyError, match='val_dataloader'):
        load_tool().main([str(config), '--output-dir', str(tmp_path / 'o'), '--phase', 'val'])


def test_max_images_in_process(tmp_path, capsys):
    config = make_dataset(tmp_path / 'data')
    assert load_tool().main([str(config), '--output-dir', str(tmp_path / 'o'),
                             '--max-images', '1']) == 0
    assert [p.name for p in (tmp_path / 'o').glob('*.png')] == ['00000_a.png']
    assert 'browse: 1/1 images [' in capsys.readouterr().err  # the progress line


def test_draw_sample_reads_chw_bgr_inputs():
    draw_sample = load_tool().draw_sample
    inputs = torch.zeros(3, 32, 48, dtype=torch.uint8)
    inputs[2] = 200  # red channel of a BGR image
    sample = DetDataSample()
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[5., 5., 20., 25.]]),
                                       labels=torch.tensor([1]))
    drawn = draw_sample(dict(inputs=inputs, data_samples=sample), CLASSES)
    assert drawn.shape == (32, 48, 3)
    assert tuple(drawn[31, 47]) == (0, 0, 200)
    assert tuple(drawn[24, 5]) == class_color(1)  # left edge, below the caption
