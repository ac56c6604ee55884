"""init_detector / inference_detector / DetInferencer / demo/image_demo.py on a tiny DINO."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from codetr.apis import DetInferencer, expand_inputs, inference_detector, init_detector
from codetr.engine.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / 'configs' / 'quickstart' / 'dino_r18_quickstart_synthetic.py'
# Small test images: resize into 96 x 64 instead of the config's 320 x 256.
OPTIONS = {'test_dataloader.dataset.pipeline.1.scale': (96, 64)}
# Names unlike the config's shapes, so the outputs prove they come from the checkpoint.
CKPT_CLASSES = ('ant', 'bee', 'cat', 'dog', 'eel', 'fox', 'gnu', 'hen')
IMAGE_HW = (48, 72)  # original size; the pipeline scales it by 4/3 to 64 x 96


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = init_detector(CONFIG, cfg_options=OPTIONS)
    with torch.no_grad():  # a class-3 prior high enough that some boxes pass the threshold
        for branch in model.query_head.cls_branches:
            branch.bias.fill_(-4.0)
            branch.bias[3] = 2.0
    path = tmp_path_factory.mktemp('ckpt') / 'tiny.pth'
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=CKPT_CLASSES))), path)
    return path


@pytest.fixture(scope='module')
def image_file(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (*IMAGE_HW, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp('imgs') / 'shape_a.png'
    cv2.imwrite(str(path), img)
    return path


def test_init_detector_loads_weights_and_checkpoint_class_names(checkpoint):
    model = init_detector(CONFIG, str(checkpoint), cfg_options=OPTIONS)
    assert not model.training
    assert model.dataset_meta['classes'] == CKPT_CLASSES
    saved = torch.load(checkpoint, weights_only=True)['state_dict']
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_init_detector_without_checkpoint_takes_config_class_names():
    model = init_detector(CONFIG, cfg_options=OPTIONS)
    assert model.dataset_meta['classes'][0] == 'circle'


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match='checkpoint not found: .*nowhere.pth'):
        init_detector(CONFIG, str(tmp_path / 'nowhere.pth'), cfg_options=OPTIONS)


def test_unrelated_checkpoint_is_refused(tmp_path):
    path = tmp_path / 'other.pth'
    torch.save(dict(state_dict={'head.weight': torch.zeros(2)}), path)
    with pytest.raises(CheckpointError, match='shares no parameter names'):
        init_detector(CONFIG, str(path), cfg_options=OPTIONS)


def test_inference_detector_on_array_and_path_agree(checkpoint, image_file):
    model = init_detector(CONFIG, str(checkpoint), cfg_options=OPTIONS)
    img = cv2.imread(str(image_file))
    from_array = inference_detector(model, img)
    from_path, = inference_detector(model, [image_file])
    assert from_array.metainfo['ori_shape'] == IMAGE_HW
    assert from_array.metainfo['img_shape'] == (64, 96)
    pred = from_array.pred_instances
    assert len(pred) == 50  # the quickstart's max_per_img
    # boxes are rescaled to the original 48 x 72 image
    assert pred.bboxes.min() >= 0 and pred.bboxes[:, 2].max() <= 72 + 1e-3
    assert pred.bboxes[:, 3].max() <= 48 + 1e-3
    assert torch.allclose(pred.bboxes, from_path.pred_instances.bboxes)
    assert torch.equal(pred.labels, from_path.pred_instances.labels)


def test_det_inferencer_writes_vis_and_preds(checkpoint, image_file, tmp_path, capsys):
    inferencer = DetInferencer(str(CONFIG), str(checkpoint))
    img = cv2.imread(str(image_file))
    out = inferencer([image_file, img], out_dir=str(tmp_path), pred_score_thr=0.5,
                     batch_size=2)
    assert 'infer: 2/2 images [' in capsys.readouterr().err  # the progress line
    assert sorted(p.name for p in (tmp_path / 'vis').iterdir()) == ['00000001.png',
                                                                   'shape_a.png']
    vis = cv2.imread(str(tmp_path / 'vis' / 'shape_a.png'))
    assert vis.shape == (*IMAGE_HW, 3) and not np.array_equal(vis, img)  # boxes drawn
    pred = json.loads((tmp_path / 'preds' / 'shape_a.json').read_text())
    assert set(pred) == {'bboxes', 'scores', 'labels', 'label_names'}
    assert len(pred['bboxes']) == len(pred['scores']) == 50
    assert pred['label_names'] == [CKPT_CLASSES[i] for i in pred['labels']]
    assert pred['label_names'].count('dog') > 0  # the class with the raised prior
    assert out['predictions'][0] == pred


def test_det_inferencer_switches_off_outputs(checkpoint, image_file, tmp_path):
    inferencer = DetInferencer(str(CONFIG), str(checkpoint))
    inferencer(str(image_file), out_dir=str(tmp_path), no_save_vis=True)
    assert not (tmp_path / 'vis').exists() and (tmp_path / 'preds' / 'shape_a.json').exists()


def test_expand_inputs_folder_glob_and_missing(image_file, tmp_path):
    folder = image_file.parent
    (folder / 'notes.txt').write_text('not an image')
    assert expand_inputs(str(folder)) == [str(image_file)]
    assert expand_inputs(str(folder / '*.png')) == [str(image_file)]
    with pytest.raises(FileNotFoundError, match='no image found'):
        expand_inputs(str(tmp_path / 'missing.jpg'))


def load_demo():
    spec = importlib.util.spec_from_file_location('image_demo', ROOT / 'demo' / 'image_demo.py')
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo


def test_image_demo_main_writes_outputs(checkpoint, image_file, tmp_path, capsys):
    out_dir = tmp_path / 'outputs'
    load_demo().main([str(image_file.parent / '*.png'), str(CONFIG), '--weights',
                      str(checkpoint), '--out-dir', str(out_dir), '--batch-size', '2',
                      '--cfg-options', 'test_dataloader.dataset.pipeline.1.scale=(96,64)'])
    assert (out_dir / 'vis' / 'shape_a.png').is_file()
    pred = json.loads((out_dir / 'preds' / 'shape_a.json').read_text())
    assert set(pred['label_names']) <= set(CKPT_CLASSES)
    assert '1 image(s)' in capsys.readouterr().out


@pytest.mark.slow  # a fresh interpreter imports torch and codetr: ~10 s idle, ~30 s under load
def test_image_demo_script(checkpoint, image_file, tmp_path):
    out_dir = tmp_path / 'outputs'
    cmd = [sys.executable, str(ROOT / 'demo' / 'image_demo.py'), str(image_file.parent),
           str(CONFIG), '--weights', str(checkpoint), '--out-dir', str(out_dir),
           '--pred-score-thr', '0.5']
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out_dir / 'vis' / 'shape_a.png').is_file()
    pred = json.loads((out_dir / 'preds' / 'shape_a.json').read_text())
    assert set(pred['label_names']) <= set(CKPT_CLASSES)


def test_image_demo_missing_checkpoint_exits_with_the_reason(image_file, tmp_path):
    with pytest.raises(SystemExit, match='error: checkpoint not found: .*none.pth'):
        load_demo().main([str(image_file), str(CONFIG), '--weights', str(tmp_path / 'none.pth')])


def test_det_inferencer_with_a_mask_model_writes_and_draws_masks(image_file, tmp_path):
    from pycocotools import mask as mask_util

    config = ROOT / 'configs' / 'quickstart' / 'co_dino_r18_k2_mask_quickstart_synthetic.py'
    torch.manual_seed(0)
    inferencer = DetInferencer(str(config))
    out = inferencer(str(image_file), out_dir=str(tmp_path), pred_score_thr=0.0)
    pred = out['predictions'][0]
    assert len(pred['masks']) == len(pred['bboxes']) == 30  # the config's max_per_img
    assert pred['masks'][0]['size'] == list(IMAGE_HW)
    decoded = mask_util.decode(pred['masks'][0])
    x1, y1, x2, y2 = pred['bboxes'][0]
    ys, xs = np.nonzero(decoded)
    if len(xs):  # a mask stays inside its box
        assert xs.min() >= int(x1) - 1 and xs.max() <= x2 and ys.max() <= y2
    assert json.loads((tmp_path / 'preds' / 'shape_a.json').read_text()) == pred
