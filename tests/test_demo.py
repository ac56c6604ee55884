"""The main job (tools/misc/run_demo.py): its helpers, and one tiny run end to end."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from mmengine.config import Config

from codetr.datasets.synthetic import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'tools' / 'misc' / 'run_demo.py'
DEMO_CFG = ROOT / 'configs' / 'quickstart' / 'co_dino_r18_k2_quickstart_synthetic.py'
MASK_CFG = ROOT / 'configs' / 'quickstart' / 'co_dino_r18_k2_mask_quickstart_synthetic.py'


def load_run_demo():
    spec = importlib.util.spec_from_file_location('run_demo', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('key, branch', [
    ('loss', 'total'),
    ('loss_cls', 'one-to-one'),
    ('d0.loss_bbox', 'one-to-one'),
    ('enc_loss_iou', 'one-to-one'),
    ('d1.dn_loss_cls', 'one-to-one'),
    ('atss.loss_centerness', 'atss head'),
    ('rcnn.loss_rpn_cls', 'rcnn head'),
    ('rcnn.pos.loss_cls', 'rcnn queries'),
    ('atss.pos.d0.loss_iou', 'atss queries'),
    ('grad_norm', None),
    ('coco/bbox_mAP', None),
])
def test_branch_of_groups_the_logged_losses(key, branch):
    assert load_run_demo().branch_of(key) == branch


def test_set_data_root_moves_loaders_and_evaluators():
    cfg = Config.fromfile(DEMO_CFG)
    load_run_demo().set_data_root(cfg, '/tmp/shapes')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].dataset.data_root == '/tmp/shapes/'
    assert cfg.val_evaluator.ann_file == '/tmp/shapes/annotations/instances_val.json'
    assert cfg.test_evaluator.ann_file == '/tmp/shapes/annotations/instances_val.json'


def test_missing_dataset_says_how_to_make_it(tmp_path):
    run_demo = load_run_demo()
    args = run_demo.parse_args(['--data-root', str(tmp_path), '--work-dir', str(tmp_path)])
    with pytest.raises(SystemExit, match='make_synthetic_dataset.py'):
        run_demo.build_cfg(args)


def test_demo_trains_evaluates_draws_and_plots(tmp_path):
    """One iteration of the K = 2 demo config with its rcnn head given masks (the mask quick
    start: the same model plus a mask branch) on 4 tiny images: the box and mask AP lines,
    the drawings (ground truth | predictions, side by side), the curves and the checkpoint
    exist."""
    data = tmp_path / 'data'
    make_synthetic_dataset(data, num_train=4, num_val=2, seed=0, min_size=96, max_size=128)
    work = tmp_path / 'work'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), '--config', str(MASK_CFG), '--work-dir', str(work),
         '--data-root', str(data), '--num-images', '2',
         '--cfg-options', 'train_cfg.max_epochs=1', 'default_hooks.logger.interval=1'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    match = re.search(r'Demo box AP (\d\.\d{3})  AP50 (\d\.\d{3})', out)
    assert match, out[-2000:]
    assert 0.0 <= float(match.group(1)) <= float(match.group(2)) <= 1.0
    mask = re.search(r'Demo mask AP (\d\.\d{3})  AP50 (\d\.\d{3})', out)
    assert mask and 0.0 <= float(mask.group(1)) <= float(mask.group(2)) <= 1.0
    assert 'Epoch(train) [1][1/1]' in out + proc.stderr  # the iteration line
    assert 'test: 2/2 images' in proc.stderr  # the evaluation progress reached the end
    drawings = sorted((work / 'predictions').glob('*.png'))
    assert len(drawings) == 2
    for path in drawings:
        img = cv2.imread(str(path))
        original = cv2.imread(str(data / 'val' / (path.stem.split('_', 1)[1] + '.png')))
        assert img.shape == (original.shape[0], 2 * original.shape[1] + 4, 3)
    curves = cv2.imread(str(work / 'curves.png'))
    assert curves is not None and curves.shape[1] > curves.shape[0]
    assert (work / 'epoch_1.pth').is_file()
    assert str(work / 'curves.png') in out


@pytest.mark.parametrize('variant, heads', [('k0', []), ('k1', ['atss']),
                                            ('k2', ['rcnn', 'atss'])])
def test_quickstart_variants_differ_only_in_their_aux_heads(variant, heads):
    from codetr.registry import MODELS

    cfg = Config.fromfile(ROOT / 'configs' / 'quickstart'
                          / f'co_dino_r18_{variant}_quickstart_synthetic.py')
    model = MODELS.build(cfg.model)
    assert list(model.aux_heads) == heads
    assert sorted(model.query_head.pos_query_generators) == sorted(heads)
    assert sorted(k for k in cfg.model.train_cfg if k != 'query_head') == sorted(heads)
    assert (model.adapter is None) == (not heads)


def test_an_aux_head_changes_from_the_command_line():
    """`--cfg-options model.num_classes=20` reaches every head, nested RoI head included."""
    from mmengine.config import DictAction

    from codetr.registry import MODELS

    cfg = Config.fromfile(DEMO_CFG)
    action = DictAction(option_strings=['--cfg-options'], dest='cfg_options')
    options = {}
    for item in ('model.num_classes=20', 'model.lambda_2=1.0'):
        key, value = item.split('=')
        options[key] = action._parse_iterable(value)
    cfg.merge_from_dict(options)
    model = MODELS.build(cfg.model)
    assert model.query_head.num_classes == 20
    assert model.aux_heads['atss'].num_classes == 20
    assert model.aux_heads['rcnn'].num_classes == 20
    assert model.aux_heads['rcnn'].roi_head.bbox_head.fc_cls.out_features == 21
    assert model.aux_heads['atss'].atss_cls.out_channels == 20  # one anchor per location
    assert model.lambda_2 == 1.0



def test_demo_prints_mask_ap_when_the_config_evaluates_segm():
    run_demo = load_run_demo()
    box = {'coco/bbox_mAP': 0.25, 'coco/bbox_mAP_50': 0.5}
    assert run_demo.ap_lines(box, 64, 9.5) == [
        'Demo box AP 0.250  AP50 0.500  (COCO metric, 64 synthetic val images; 9.5 min)']
    lines = run_demo.ap_lines({**box, 'coco/segm_mAP': 0.2, 'coco/segm_mAP_50': 0.45}, 64, 9.5)
    assert lines[1] == 'Demo mask AP 0.200  AP50 0.450  (COCO segm metric)'
    assert Config.fromfile(MASK_CFG).test_evaluator.metric == ['bbox', 'segm']


@pytest.mark.slow  # the full mask demo: ~10 min on an idle 2-core CPU, much more when busy
def test_mask_demo_learns_masks(tmp_path):
    """`make demo DEMO_CONFIG=<mask quick start>`: 640 / 64 synthetic images, 8 epochs."""
    data = tmp_path / 'data'
    make_synthetic_dataset(data, num_train=640, num_val=64, seed=0, min_size=128, max_size=160)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), '--config', str(MASK_CFG), '--work-dir',
         str(tmp_path / 'work'), '--data-root', str(data), '--num-images', '2'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=7200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    box = re.search(r'Demo box AP (\d\.\d{3})', proc.stdout)
    mask = re.search(r'Demo mask AP (\d\.\d{3})  AP50 (\d\.\d{3})', proc.stdout)
    assert box and mask, proc.stdout[-2000:]
    assert float(mask.group(1)) > 0.05 and float(mask.group(2)) > 0.1
