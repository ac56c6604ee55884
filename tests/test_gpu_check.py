"""benchmarks/gpu_check.py: on a CPU it runs the CPU parts and names what it skipped; on a
machine without codetr's dependencies it says which are missing before importing any."""
from __future__ import annotations

import ast
import importlib.util
import json

import pytest
import torch

from .test_benchmarks import ROOT, load_script

SCRIPT = ROOT / 'benchmarks' / 'gpu_check.py'
STDLIB_IMPORTS = {'__future__', 'argparse', 'importlib.util', 'json', 'sys', 'time',
                  'traceback', 'pathlib'}


def test_module_level_imports_are_standard_library_only():
    """The dependency check must run before torch, mmengine or codetr is imported."""
    tree = ast.parse(SCRIPT.read_text())
    imported = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported <= STDLIB_IMPORTS, imported - STDLIB_IMPORTS


def test_missing_packages_are_listed_with_their_pip_names(monkeypatch, capsys):
    gpu_check = load_script('gpu_check')
    real_find_spec = importlib.util.find_spec
    absent = {'mmengine', 'mmcv', 'pycocotools', 'timm'}
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: None if name in absent else real_find_spec(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main([])
    assert exit_info.value.code == 2
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report['missing_packages'] == {'mmengine': 'mmengine', 'mmcv': 'mmcv-lite',
                                          'pycocotools': 'pycocotools', 'timm': 'timm'}
    assert report['install'].startswith('pip install mmcv-lite mmengine pycocotools timm')
    assert not report['passed']


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU report')
def test_quick_cpu_run_checks_the_cpu_parts_and_lists_the_skips(tmp_path, capsys):
    out = tmp_path / 'gpu_check.json'
    report = load_script('gpu_check').main(['--quick', '--out', str(out)])
    assert json.loads(out.read_text()) == report
    assert report['device'] == 'cpu' and report['passed']
    checks = report['checks']
    assert set(checks) == {'ms_deform_attn', 'train_step', 'ddp', 'predict'}
    assert all(c['ok'] for c in checks.values())
    msda = checks['ms_deform_attn']['results']
    assert set(msda) == {f'{case}.{dtype}.{backend}' for case in ('encoder', 'decoder')
                         for dtype in ('float32', 'bfloat16') for backend in ('cpp', 'pytorch')}
    fp32 = msda['encoder.float32.cpp']
    assert fp32['ok'] and max(fp32['errors']['output'], fp32['errors']['grad_value']) < 1e-5
    assert msda['encoder.bfloat16.cpp']['ok']  # bfloat16 values, float32 sums
    steps = checks['train_step']['results']
    assert set(steps) == {'float32', 'bfloat16', 'float16_autocast_cpu'}
    # The float16 step (the AMP path) keeps finite losses and a positive loss scale.
    assert steps['float16_autocast_cpu']['finite_losses']
    assert steps['float16_autocast_cpu']['loss_scale'] > 0
    assert checks['ddp']['backend'] == 'gloo'
    assert checks['predict']['images_per_s'] > 0
    skipped = {s['check']: s['reason'] for s in report['skipped']}
    assert {'cuda', 'ms_deform_attn.triton', 'train_step.amp_float16', 'ddp.nccl',
            'ms_deform_attn.encoder.float16'} <= set(skipped)
    assert 'NCCL needs CUDA' in skipped['ddp.nccl']
    assert all(reason for reason in skipped.values())
