"""The matrix-product floor counts and times a step's products; side-by-side runs alternate
codetr and the MMDetection port on one batch file and report same-run ratios."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch

from tests.test_benchmarks import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def floor_mod():
    return load_script('matrix_floor')


@pytest.fixture(scope='module')
def sbs():
    return load_script('side_by_side')


def test_floor_counts_every_product_of_forward_and_backward(floor_mod):
    """Linear 64 -> 32 on 10 rows: addmm forward, two mm backward, 2 * 10 * 64 * 32 each."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    x = torch.randn(10, 64, requires_grad=True)

    def step() -> None:
        linear(x).sum().backward()

    result = floor_mod.measure_floor(step, step_s=1.0, min_time_s=0.001)
    assert result['flops'] == 3 * 2 * 10 * 64 * 32
    assert result['calls'] == 3 and result['distinct'] == 3
    assert result['by_op']['addmm']['calls'] == 1 and result['by_op']['mm']['calls'] == 2
    assert result['by_op']['mm']['gflop'] == pytest.approx(2 * 2 * 10 * 64 * 32 / 1e9, abs=0.01)
    assert result['floor_s'] > 0
    assert result['step_over_floor'] == pytest.approx(1.0 / result['floor_s'], rel=1e-2)
    assert result['gflop_by_dtype'] == {'float32': pytest.approx(0.0, abs=0.01)}


def test_repeated_calls_share_one_timing_and_bf16_is_recorded(floor_mod):
    linear = torch.nn.Linear(16, 16)
    x = torch.randn(4, 16)
    recorder = floor_mod.MatrixOpRecorder()
    with recorder, torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        for _ in range(5):
            linear(x)
    assert list(recorder.calls.values()) == [5]
    func, specs, _ = next(iter(recorder.ops.values()))
    assert all(s.dtype == torch.bfloat16 for s in specs if isinstance(s, floor_mod.TensorSpec))
    assert next(iter(recorder.flops.values())) == 2 * 4 * 16 * 16


def test_tensor_spec_rebuilds_strided_and_expanded_layouts(floor_mod):
    base = torch.randn(8, 3)
    for tensor in (base.t(), torch.randn(5)[None].expand(4, 5), base[::2]):
        spec = floor_mod._spec(tensor)
        made = spec.make()
        assert made.shape == tensor.shape and made.stride() == tensor.stride()
        assert made.dtype == tensor.dtype and torch.isfinite(made).all()


def _args(**kw) -> argparse.Namespace:
    defaults = dict(peer='/port/CO-DETR', peer_python=None, rounds=2, threads=2, iters=3,
                    warmup=1, floor=True)
    return argparse.Namespace(**{**defaults, **kw})


def test_runs_alternate_with_one_batch_file_and_same_run_ratios(sbs, tmp_path, monkeypatch):
    python = tmp_path / 'python'
    python.write_text('')
    batch = load_script('common').synthetic_batch(2, 32, 3, 80)
    calls = []

    def fake_run(cmd, label, env=None):
        batch_file = cmd[cmd.index('--batch-file') + 1]
        loaded = sbs.load_batch(batch_file)
        torch.testing.assert_close(loaded['inputs'][1], batch['inputs'][1])
        torch.testing.assert_close(loaded['data_samples'][0].gt_instances.bboxes,
                                   batch['data_samples'][0].gt_instances.bboxes)
        assert loaded['data_samples'][1].metainfo['img_shape'] == (32, 32)
        is_peer = cmd[0] == str(python)
        calls.append(('peer' if is_peer else 'codetr', cmd, env))
        index = sum(1 for c in calls if c[0] == calls[-1][0])
        run = {'step_s': (10.0 if is_peer else 4.0) * index, 'threads': 2,
               'peak_mem_mb': 6000.0 if is_peer else 3000.0}
        if '--floor' in cmd:
            run['matrix_floor'] = {'floor_s': 2.0}
        return run

    monkeypatch.setattr(sbs, 'run_json', fake_run)
    monkeypatch.setenv('PYTHONPATH', str(ROOT))
    result = sbs.compare(_args(peer_python=str(python)), ROOT / 'benchmarks/train_step.py',
                         ['CONFIG', '--threads', '2'], batch, 'train', 'step_s')
    assert [c[0] for c in calls] == ['codetr', 'peer', 'codetr', 'peer']
    assert ['--floor' in c[1] for c in calls] == [True, True, False, False]
    assert '--no-floor' in calls[2][1] and calls[0][1][0] == sys.executable
    peer_cmd = calls[1][1]
    assert peer_cmd[peer_cmd.index('--mode') + 1] == 'train'
    assert peer_cmd[peer_cmd.index('--threads') + 1] == '2'
    assert 'PYTHONPATH' not in calls[1][2] and calls[0][2]['PYTHONPATH'] == str(ROOT)
    assert all(c[2]['OMP_NUM_THREADS'] == '2' for c in calls)
    # medians: codetr 6 s (4, 8), port 15 s (10, 20); per round 2.5 and 2.5
    assert result['codetr']['step_s'] == 6.0 and result['peer']['step_s'] == 15.0
    assert result['speedup'] == 2.5 and result['speedup_per_round'] == [2.5, 2.5]
    assert result['memory_fraction'] == 0.5
    assert result['codetr']['step_over_floor'] == 3.0
    assert result['peer']['step_over_floor'] == 7.5
    assert result['cpu_model'] and result['rounds'] == 2


def test_peer_python_is_found_or_the_error_says_how(sbs, tmp_path, monkeypatch):
    monkeypatch.delenv(sbs.PEER_PYTHON_ENV, raising=False)
    port = tmp_path / 'CO-DETR'
    with pytest.raises(FileNotFoundError, match='--peer-python'):
        sbs.peer_python(_args(peer=str(port)))
    venv_python = tmp_path / 'venv' / 'bin' / 'python'
    venv_python.parent.mkdir(parents=True)
    venv_python.write_text('')
    assert sbs.peer_python(_args(peer=str(port))) == str(venv_python)
    monkeypatch.setenv(sbs.PEER_PYTHON_ENV, str(port.parent / 'venv' / 'bin' / 'python'))
    assert sbs.peer_python(_args(peer=str(port))) == str(venv_python)


def test_port_adapter_finds_the_port_folder_or_says_what_to_give(tmp_path):
    adapter = load_script('peer_mmdet_port')
    with pytest.raises(FileNotFoundError, match="port's code folder"):
        adapter.port_root(str(tmp_path))
    root = tmp_path / 'mmdetection' / 'projects' / 'CO-DETR'
    (root / 'codetr').mkdir(parents=True)
    (root / 'codetr' / '__init__.py').write_text('')
    (root / adapter.CONFIG).parent.mkdir(parents=True)
    (root / adapter.CONFIG).write_text('')
    assert adapter.port_root(str(tmp_path / 'mmdetection')) == root
    assert adapter.port_root(str(root)) == root


def test_port_adapter_does_not_import_codetr():
    source = (ROOT / 'benchmarks' / 'peer_mmdet_port.py').read_text()
    imports = [line for line in source.splitlines() if line.lstrip().startswith(('import ',
                                                                                 'from '))]
    assert not any('codetr' in line.split('#')[0] for line in imports)
    assert not any(line.split()[1] in ('common', 'side_by_side') for line in imports)
