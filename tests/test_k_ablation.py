"""benchmarks/k_ablation.py: the spread and ordering arithmetic on hand-made results, and the
whole benchmark at a trivial size (the recorded run is the command in benchmarks/README.md)."""
from __future__ import annotations

import json

import pytest

from .test_benchmarks import load_script

TRIVIAL = ['--epochs', '1', '--train-images', '2', '--val-images', '2', '--min-size', '64',
           '--max-size', '64', '--batch-size', '2']


@pytest.fixture(scope='module')
def bench():
    return load_script('k_ablation')


def _result(variant, seed, ap, ap50, step_s=1.0, peak_mb=100.0):
    return dict(variant=variant, seed=seed, ap=ap, ap50=ap50, step_s=step_s, peak_mb=peak_mb,
                process_cpu_s=10.0)


def test_spread_and_paper_ordering_on_known_numbers(bench):
    results = [_result('k0', s, ap, 0.1) for s, ap in enumerate((0.10, 0.12, 0.14))]
    results += [_result('k1_atss', s, ap, 0.3, step_s=t)
                for s, (ap, t) in enumerate(((0.20, 1.2), (0.22, 1.4), (0.24, 1.1)))]
    results += [_result('k2', s, ap, 0.3, peak_mb=150.0 + s) for s, ap in
                enumerate((0.21, 0.23, 0.19))]
    summary = bench.summarise(results)
    k1 = summary['k1_atss']
    assert k1['ap']['mean'] == pytest.approx(0.22) and k1['ap']['std'] == pytest.approx(0.02)
    assert (k1['ap']['min'], k1['ap']['max']) == (0.20, 0.24)
    assert k1['step_s']['median'] == 1.2 and summary['k2']['peak_mb'] == 152.0
    assert (summary['k2']['K'], summary['k2']['aux_heads']) == (2, ['rcnn', 'atss'])
    ordering = bench.paper_ordering(summary)
    gain = ordering['k1_atss - k0']['ap']
    # difference of means 0.10; Welch standard error sqrt(0.02^2 / 3 * 2)
    assert gain['diff'] == pytest.approx(0.10)
    assert gain['stderr'] == pytest.approx((2 * 0.02 ** 2 / 3) ** 0.5, abs=1e-4)
    assert gain['above_2_stderr']
    assert ordering['k2 - k1_atss']['ap']['diff'] == pytest.approx(-0.01)
    assert ordering['holds'] == dict(k0_below_k1=True, k1_not_above_k2=True)
    assert 'k1_rcnn - k0' not in ordering  # variants not run are not compared


def test_trivial_run_prints_json_and_writes_png(bench, tmp_path, capsys):
    out = tmp_path / 'k_ablation'
    report = bench.main(['--out-dir', str(out), '--variants', 'k0', 'k1_rcnn', '--seeds', '0',
                         '--in-process', *TRIVIAL])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
    assert json.loads((out / 'k_ablation.json').read_text()) == report
    assert list(report['variants']) == ['k0', 'k1_rcnn']
    for variant in report['variants'].values():
        assert variant['seeds'] == [0]
        assert len(variant['ap']['values']) == len(variant['ap50']['values']) == 1
        assert variant['ap']['std'] == 0.0
        assert all(0 <= v <= 1 for v in variant['ap50']['values'])
        assert variant['step_s']['median'] > 0 and variant['peak_mb'] > 0
    assert report['setting']['epochs'] == 1
    with open(report['png'], 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    # fixed seed, deterministic algorithms: a rerun repeats the run exactly
    first = json.loads((out / 'runs' / 'k1_rcnn_seed0' / 'result.json').read_text())
    again = bench.train_one(bench.parse_args(['--out-dir', str(out), *TRIVIAL]), 'k1_rcnn', 0)
    assert (again['last_loss'], again['ap']) == (first['last_loss'], first['ap'])


@pytest.mark.slow  # two fresh processes, each importing torch and training
def test_runs_in_their_own_processes(bench, tmp_path, capsys):
    out = tmp_path / 'k_ablation'
    report = bench.main(['--out-dir', str(out), '--variants', 'k1_atss', 'k2', '--seeds', '3',
                         '--jobs', '2', *TRIVIAL])
    assert list(report['variants']) == ['k1_atss', 'k2']
    for name in ('k1_atss', 'k2'):
        run_dir = out / 'runs' / f'{name}_seed3'
        assert (run_dir / 'run.log').is_file()
        result = json.loads((run_dir / 'result.json').read_text())
        assert report['variants'][name]['peak_mb'] == result['peak_mb'] > 0
    assert report['process_cpu_s'] > 0
