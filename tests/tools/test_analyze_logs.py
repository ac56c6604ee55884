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


# ------------------------------------------------------------ Co-DETR branches
def codetr_line(it: int, lr: float, scale: float) -> dict:
    """One training line of a K = 2 Co-DINO run (1 earlier decoder layer), hand-made."""
    terms = {'loss_cls': 1.0, 'loss_bbox': 2.0, 'd0.loss_cls': 3.0, 'enc_loss_cls': 4.0,
             'dn_loss_cls': 5.0, 'd0.dn_loss_bbox': 6.0,
             'rcnn.loss_rpn_cls': 7.0, 'rcnn.loss_cls': 8.0,
             'rcnn.pos.loss_cls': 9.0, 'rcnn.pos.d0.loss_cls': 10.0,
             'atss.loss_centerness': 11.0, 'atss.pos.loss_bbox': 12.0}
    terms = {k: v * scale for k, v in terms.items()}
    return dict(base_lr=lr, lr=lr, data_time=0.1, grad_norm=3.0, loss=sum(terms.values()),
                **terms, time=0.5, epoch=1, iter=it, step=it)


def write_run(path, scale: float):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [codetr_line(1, 1e-4, scale), codetr_line(2, 2e-4, scale / 2),
             {'coco/bbox_mAP': 0.1, 'coco/bbox_mAP_50': 0.3, 'coco/bbox_mAP_s': 0.0,
              'time': 0.1, 'step': 1}]
    path.write_text('\n'.join(json.dumps(line) for line in lines) + '\n')
    return str(path)


def test_branch_series_finds_every_branch_and_sums_its_terms(tmp_path):
    series = analyze_logs.load_log(write_run(tmp_path / 'a.json', 1.0))
    branches = analyze_logs.branch_series(series)
    assert list(branches) == ['learning rate', 'total', 'one-to-one', 'atss head',
                              'atss queries', 'rcnn head', 'rcnn queries', 'validation']
    assert branches['learning rate'] == {'lr': [(1, 1e-4), (2, 2e-4)]}
    assert branches['total'] == {'loss': [(1, 78.0), (2, 39.0)]}
    assert branches['one-to-one'] == {'decoder': [(1, 6.0), (2, 3.0)],
                                      'encoder': [(1, 4.0), (2, 2.0)],
                                      'denoising': [(1, 11.0), (2, 5.5)]}
    assert branches['rcnn head'] == {'loss_rpn_cls': [(1, 7.0), (2, 3.5)],
                                     'loss_cls': [(1, 8.0), (2, 4.0)]}
    assert branches['rcnn queries'] == {'loss_cls': [(1, 19.0), (2, 9.5)]}  # both layers
    assert branches['atss head'] == {'loss_centerness': [(1, 11.0), (2, 5.5)]}
    assert branches['atss queries'] == {'loss_bbox': [(1, 12.0), (2, 6.0)]}
    assert branches['validation'] == {'coco/bbox_mAP': [(1, 0.1)],
                                      'coco/bbox_mAP_50': [(1, 0.3)]}


def test_plot_branches_compares_two_runs_in_one_png(tmp_path, capsys):
    run_a = write_run(tmp_path / 'work_dirs' / 'k2' / '20260101_000000' / 'vis_data'
                      / 'scalars.json', 1.0)
    run_b = write_run(tmp_path / 'work_dirs' / 'k0' / '20260102_000000' / 'vis_data'
                      / 'scalars.json', 2.0)
    out = tmp_path / 'branches.png'
    analyze_logs.main(['plot_branches', run_a, run_b, '--out', str(out)])
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    printed = capsys.readouterr().out
    assert 'learning rate: k2: lr, k0: lr' in printed  # the legend names the runs
    assert 'one-to-one: k2: decoder, k2: encoder, k2: denoising, k0: decoder' in printed
    assert 'atss queries: k2: loss_bbox, k0: loss_bbox' in printed
    same = [str(tmp_path / 'k2' / t / 'vis_data' / 'scalars.json') for t in ('t1', 't2')]
    assert analyze_logs.run_names(same + ['logs/x.json']) == ['k2/t1', 'k2/t2', 'logs/x']
    with pytest.raises(ValueError, match='2 logs but 1 names'):
        analyze_logs.plot_branches([run_a, run_b], str(out), names=['x'])
