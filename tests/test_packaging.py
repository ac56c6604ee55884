"""The wheel: what it ships (configs, commands, kernels' source, LICENSE, metadata) and, in
a fresh venv outside the repository, a quick-start training and evaluation through the
console commands (slow)."""
from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from mmengine.config import Config

from codetr.utils import list_configs, resolve_config

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ('codetr', 'configs', 'requirements', 'setup.py', 'pyproject.toml', 'README.md',
           'requirements.txt', 'LICENSE', 'MANIFEST.in')
COMMANDS = {'codetr-train': 'codetr.cli.train:main', 'codetr-test': 'codetr.cli.test:cli',
            'codetr-infer': 'codetr.cli.infer:main', 'codetr-browse': 'codetr.cli.browse:main'}
QUICKSTART = 'co_dino_r18_k2_quickstart_synthetic'


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> Path:
    """``pip wheel`` of a copy of the sources (the build leaves build/ and *.egg-info in
    the tree it runs in, so not in the repository)."""
    work = tmp_path_factory.mktemp('wheel')
    src = work / 'src'
    src.mkdir()
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '*.egg-info', 'build', 'dist')
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    done = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps',
                           '--no-build-isolation', '-q', str(src), '-w', str(work / 'dist')],
                          cwd=work, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = (work / 'dist').glob('codetr-*.whl')
    return path


def _metadata(archive: zipfile.ZipFile, name: str) -> str:
    (path,) = [n for n in archive.namelist() if re.match(rf'codetr-[^/]+\.dist-info/{name}$', n)]
    return archive.read(path).decode()


def test_wheel_ships_every_config_the_kernels_and_the_license(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        shipped = {n[len('codetr/.mim/configs/'):] for n in names
                   if n.startswith('codetr/.mim/configs/')}
        assert shipped == set(list_configs()) and '_base_/default_runtime.py' in shipped
        assert 'codetr/models/layers/ms_deform_attn/csrc/ms_deform_attn_cpu.cpp' in names
        assert 'codetr/cli/train.py' in names and 'codetr/utils/config_path.py' in names
        assert not any(n.startswith(('configs/', 'tests/', 'tools/')) for n in names)
        assert 'Apache License' in _metadata(archive, 'licenses/LICENSE')
        entry_points = _metadata(archive, 'entry_points.txt')
        metadata = _metadata(archive, 'METADATA')
    commands = dict(re.findall(r'^(codetr-\w+) = (\S+)$', entry_points, re.M))
    assert commands == COMMANDS
    for target in commands.values():
        module, attr = target.split(':')
        assert callable(getattr(importlib.import_module(module), attr))
    assert 'License: Apache-2.0' in metadata and 'Project-URL: Paper' in metadata
    assert 'Classifier: Topic :: Scientific/Engineering :: Image Recognition' in metadata
    requires = re.findall(r'^Requires-Dist: ([^;\n]+)$', metadata, re.M)
    assert [r for r in requires if 'opencv' in r] == ['opencv-python>=4.8']
    assert not [r for r in requires if r.startswith('setuptools')]
    assert 'timm<1.1,>=1.0.8' in requires and 'pycocotools>=2.0.8' in requires
    assert any(r.startswith('faster-coco-eval>=') for r in requires)


def test_packaged_configs_resolve_and_inherit(wheel, tmp_path):
    """The wheel's configs folder answers paths and short names, and `_base_` files load
    from it (read in place, relative to each config)."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path, [n for n in archive.namelist() if '/.mim/' in n])
    root = tmp_path / 'codetr' / '.mim' / 'configs'
    path = resolve_config('co_dino/co_dino_5scale_r50_8xb2_1x_coco.py', root=root)
    assert path == resolve_config('co_dino_5scale_r50_8xb2_1x_coco', root=root)
    assert path == str(root / 'co_dino' / 'co_dino_5scale_r50_8xb2_1x_coco.py')
    cfg = Config.fromfile(resolve_config(QUICKSTART, root=root))
    assert sorted(cfg.model.aux_heads) == ['atss', 'rcnn']  # _base_/models/co_dino_5scale_r50
    assert cfg.val_evaluator.type == 'CocoMetric'  # _base_/datasets/synthetic_detection


def _fresh_venv(path: Path) -> Path:
    """A venv that sees this test venv's packages through a path file (its own
    site-packages first) but not their .pth files, so not an editable codetr; with
    pkg_resources made unimportable, as it is with setuptools >= 81."""
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(path)], check=True,
                   timeout=120)
    python = path / 'bin' / 'python'
    site = subprocess.run([str(python), '-c', 'import sysconfig; '
                           'print(sysconfig.get_paths()["purelib"])'], check=True,
                          capture_output=True, text=True).stdout.strip()
    paths = dict.fromkeys(sysconfig.get_paths()[k] for k in ('purelib', 'platlib'))
    (Path(site) / 'test_venv_packages.pth').write_text(''.join(f'{p}\n' for p in paths))
    (Path(site) / 'no_pkg_resources.pth').write_text(
        "import sys; sys.modules['pkg_resources'] = None\n")
    return python


def _run(command: list, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    env.update(OMP_NUM_THREADS='1', CODETR_MSDA_BACKEND='pytorch')  # no kernel build
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    return out


@pytest.mark.slow  # a venv, a pip install and two fresh interpreters: 30 s idle, ~90 s loaded
def test_wheel_trains_and_evaluates_through_the_commands(wheel, tmp_path):
    python = _fresh_venv(tmp_path / 'venv')
    _run([sys.executable, '-m', 'pip', '--python', python, 'install', '-q', '--no-deps',
          wheel], tmp_path)
    run_dir = tmp_path / 'run'  # outside the repository: no configs/ or codetr/ here
    run_dir.mkdir()
    where = _run([python, '-c', 'import codetr; print(codetr.__file__)'], run_dir)
    assert where.strip().startswith(str(tmp_path / 'venv'))
    _run([python, '-c', 'from codetr.datasets.synthetic import make_synthetic_dataset; '
          "make_synthetic_dataset('shapes', 2, 2, 0, 64, 80)"], run_dir)
    data = f'{run_dir / "shapes"}/'
    ann = f'{data}annotations/instances_val.json'
    bin_dir = python.parent
    options = [f'test_dataloader.dataset.data_root={data}', f'test_evaluator.ann_file={ann}',
               'test_dataloader.batch_size=2', 'test_dataloader.num_workers=0']
    train_log = _run([bin_dir / 'codetr-train', QUICKSTART, '--work-dir', 'work',
                      '--cfg-options', f'train_dataloader.dataset.data_root={data}',
                      f'val_dataloader.dataset.data_root={data}', f'val_evaluator.ann_file={ann}',
                      'train_dataloader.batch_size=2', 'val_dataloader.batch_size=2',
                      'train_dataloader.num_workers=0', 'val_dataloader.num_workers=0',
                      'train_cfg.max_epochs=1', 'default_hooks.logger.interval=1', *options],
                     run_dir)
    assert 'Epoch(train) [1][1/1]' in train_log and 'coco/bbox_mAP_50' in train_log
    assert (run_dir / 'work' / 'last_checkpoint').read_text().endswith('epoch_1.pth')
    test_log = _run([bin_dir / 'codetr-test', f'quickstart/{QUICKSTART}.py', 'work/epoch_1.pth',
                     '--work-dir', 'test_work', '--out', 'preds.pkl', '--cfg-options', *options],
                    run_dir)
    summary = re.findall(r'Average Precision +\(AP\) @\[ IoU=0\.50:0\.95 \| area= +all', test_log)
    assert summary and re.search(r'Epoch\(test\) \[1/1\] +coco/bbox_mAP: \d\.\d{4}', test_log)
    assert (run_dir / 'preds.pkl').stat().st_size > 0
    assert not (run_dir / 'configs').exists()
