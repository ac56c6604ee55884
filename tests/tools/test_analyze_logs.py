"""analyze_logs.py on a hand-written mmengine scalars.json."""
import importlib.util
import json

import pytest

from ..conftest import ROOT


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        'analyze_logs', ROOT / 'tools' / 'analysis_tools' / 'analyze_logs.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


analyze_logs = _load_tool()

# Two epochs of 3 iterations; the first iteration of each epoch is slow (start-up).
LINES = [
    dict(lr=0.1, loss=3.0, loss_cls=2.0, time=1.0, epoch=1, iter=1, step=1),
    dict(lr=0.1, loss=2.0, loss_cls=1.5, time=0.2, epoch=1, iter=2, step=2),
    dict(lr=0.1, loss=1.0, loss_cls=0.5, time=0.4, epoch=1, iter=3, step=3),
    {'toy/mse': 0.5, 'time': 0.01, 'step': 1},
    dict(lr=0.1, loss=0.9, loss_cls=0.4, time=2.0, epoch=2, iter=4, step=4),
    dict(lr=0.1, loss=0.8, loss_cls=0.3, time=0.5, epoch=2, iter=5, step=5),
    dict(lr=0.1, loss=0.7, loss_cls=0.2, time=0.7, epoch=2, iter=6, step=6),
    {'toy/mse': 0.25, 'time': 0.01, 'step': 2},
]


@pytest.fixture
def log_file(tmp_path):
    path = tmp_path / 'scalars.json'
    path.write_text('\n'.join(json.dumps(line) for line in LINES) + '\n')
    return str(path)


def test_load_log_separates_iterations_and_epochs(log_file):
    series = analyze_logs.load_log(log_file)
    assert series['loss'] == [(1, 3.0), (2, 2.0), (3, 1.0), (4, 0.9), (5, 0.8), (6, 0.7)]
    assert series['toy/mse'] == [(1, 0.5), (2, 0.25)]


def test_cal_train_time_skips_first_iteration(log_file):
    summary = analyze_logs.cal_train_time(log_file)
    # epoch 1: mean(0.2, 0.4) = 0.3; epoch 2: mean(0.5, 0.7) = 0.6
    assert summary['slowest_epoch'] == 2 and summary['fastest_epoch'] == 1
    assert summary['slowest_time'] == pytest.approx(0.6)
    assert summary['average_iter_time'] == pytest.approx(0.45)
    assert summary['std_over_epochs'] == pytest.approx(0.15)
    with_outliers = analyze_logs.cal_train_time(log_file, include_outliers=True)
    assert with_outliers['fastest_time'] == pytest.approx(1.6 / 3)


def test_plot_curve_writes_png(log_file, tmp_path):
    out = tmp_path / 'curve.png'
    analyze_logs.main(['plot_curve', log_file, '--keys', 'loss', 'loss_cls',
                       '--legend', 'total', 'cls', '--out', str(out)])
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_plot_curve_unknown_key_lists_keys(log_file, tmp_path):
    with pytest.raises(KeyError, match="no 'loss_bbox'; its keys: .*loss_cls"):
        analyze_logs.plot_curve([log_file], ['loss_bbox'], str(tmp_path / 'x.png'))
