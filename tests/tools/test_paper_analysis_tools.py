"""The paper's analysis commands (discriminability, instability, head_conflict) end to end on
the quick-start Co-DINO built from scratch: each writes its PNGs and a JSON of the numbers."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config

from tests.analysis.tiny_setup import save_checkpoints, write_tiny_config

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ('discriminability', 'instability', 'head_conflict')
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def load_tool(name: str):
    path = ROOT / 'tools' / 'analysis_tools' / f'{name}.py'
    spec = importlib.util.spec_from_file_location(f'{name}_tool', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_png(path) -> None:
    with open(path, 'rb') as f:
        assert f.read(8) == PNG_MAGIC, path


@pytest.mark.parametrize('name', TOOLS)
def test_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_tool(name).parse_args(['--help'])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith('usage:')


@pytest.fixture(scope='module')
def run(tmp_path_factory) -> dict:
    """A config over 2 images and a 'run' of 3 checkpoints; epochs 2 and 3 hold the same
    weights, so nothing may change between them."""
    root = tmp_path_factory.mktemp('paper_tools')
    config = write_tiny_config(root, num_images=2)
    cfg = Config.fromfile(config)
    work_dir = root / 'run'
    work_dir.mkdir()
    save_checkpoints(cfg, work_dir, {1: 1, 2: 2, 3: 2})
    return dict(root=root, config=str(config), work_dir=work_dir)


def test_discriminability_writes_curves_and_score_maps(run):
    out = run['root'] / 'disc'
    ckpts = [str(run['work_dir'] / f'epoch_{e}.pth') for e in (1, 2)]
    report = load_tool('discriminability').main(
        [run['config'], *ckpts, '--labels', 'K=2 a', 'K=2 b', '--out-dir', str(out),
         '--num-vis', '1'])
    assert json.loads((out / 'discriminability.json').read_text()) == report
    assert [c['label'] for c in report['curves']] == ['K=2 a', 'K=2 b']
    for curve in report['curves']:
        for part in ('encoder', 'decoder'):
            res = curve[part]
            assert len(res['thresholds']) == len(res['iof']) == len(res['iob']) == 101
            assert np.all(np.diff(res['iof']) <= 0) and np.all(np.diff(res['iob']) >= 0)
            assert res['images'] == 2 and 0 <= res['auc'] <= 1
        # from scratch the encoder ends in a LayerNorm with unit gain and zero bias: every
        # location has the same norm up to rounding, D(F) is 0 everywhere (no contrast) and
        # tells nothing apart
        assert curve['encoder']['auc'] == pytest.approx(0.5)
    assert_png(out / 'iof_iob.png')
    assert len(report['score_maps']) == 1
    assert_png(report['score_maps'][0])


def test_instability_of_a_run_reads_its_work_dir_and_config(run):
    out = run['root'] / 'instability'
    report = load_tool('instability').main([str(run['work_dir']), '--out-dir', str(out)])
    assert json.loads((out / 'instability.json').read_text()) == report
    assert report['epochs'] == [1, 2, 3] and report['num_queries'] == 30
    first, second = report['pairs']
    assert (second['previous'], second['current']) == (2, 3)
    assert len(second['per_layer']) == 2  # the quick-start decoder's layers
    for layer in second['per_layer']:  # identical weights: the same matches
        assert layer['changed_fraction'] == 0 and layer['is_per_image'] == 0
        assert layer['num_gts'] > 0 and layer['images'] == 2
    for layer in first['per_layer']:  # other random weights match otherwise
        assert layer['changed_fraction'] > 0
        assert layer['is_per_image'] <= 2 * layer['changed_gts'] / layer['images']
    assert_png(out / 'instability.png')


def test_head_conflict_writes_matrices_and_cams(run):
    out = run['root'] / 'conflict'
    report = load_tool('head_conflict').main(
        [run['config'], str(run['work_dir'] / 'epoch_1.pth'), '--out-dir', str(out),
         '--num-vis', '1'])
    assert json.loads((out / 'head_conflict.json').read_text()) == report
    assert report['branches'] == ['detr', 'rcnn', 'atss', 'rcnn.pos', 'atss.pos']
    assert report['images'] == 2
    for key in ('memory_cosine', 'param_cosine'):
        cos = np.array(report[key]['mean'])
        assert np.allclose(np.diag(cos), 1) and np.allclose(cos, cos.T)
        assert np.all(np.abs(cos) <= 1 + 1e-9)
    kl = np.array(report['cam_kl'])
    assert np.allclose(np.diag(kl), 0) and np.all(kl >= 0)
    assert set(report['head_distance']) == set(report['branches'])
    assert_png(out / 'head_conflict.png')
    assert len(report['cams']) == 1
    assert_png(report['cams'][0])
