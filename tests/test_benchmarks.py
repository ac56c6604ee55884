"""The benchmark scripts run on the quickstart config (tiny batch, one iteration) and print
one JSON object with the documented keys; the component timers do not overlap."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / 'configs/quickstart/dino_r18_quickstart_synthetic.py')
TINY_RUN = ['--batch-size', '1', '--img-size', '64', '--num-gt', '2', '--iters', '1',
            '--cfg-options', 'model.query_head.num_queries=20']


def load_script(name: str):
    """Import ``benchmarks/<name>.py`` as a module (the folder is not a package)."""
    sys.path.insert(0, str(ROOT / 'benchmarks'))
    spec = importlib.util.spec_from_file_location(f'bench_{name}', ROOT / 'benchmarks' /
                                                  f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def printed_json(capsys) -> dict:
    lines = capsys.readouterr().out.strip().splitlines()
    return json.loads(lines[-1])


def test_train_step_json(capsys):
    result = load_script('train_step').main([CONFIG, '--warmup', '0', *TINY_RUN])
    assert printed_json(capsys) == result
    for key in ('step_s', 'images_per_s', 'forward_s', 'backward_step_s', 'forward_split_s',
                'components_included', 'peak_mem_mb', 'memory', 'cpu_model', 'matrix_floor'):
        assert key in result, key
    assert 'vs_reference' not in result  # no fixed reference figures: only same-run ratios
    split = result['forward_split_s']
    assert set(split) == {'backbone', 'neck', 'encoder', 'decoder', 'query_head_rest'}
    assert set(split) == set(result['components_included'])
    assert all(v >= 0 for v in split.values())
    # outermost regions only: the parts add up to the whole forward pass
    assert sum(split.values()) == pytest.approx(result['forward_s'], abs=2e-3)
    assert result['step_s'] == pytest.approx(result['forward_s'] + result['backward_step_s'],
                                             abs=2e-3)
    assert result['images_per_s'] == pytest.approx(1 / result['step_s'], rel=1e-2)
    floor = result['matrix_floor']
    assert floor['flops'] > 0 and floor['floor_s'] > 0 and floor['calls'] >= floor['distinct']
    assert floor['step_over_floor'] == pytest.approx(result['step_s'] / floor['floor_s'],
                                                     rel=1e-2)
    assert {'mm', 'addmm', 'convolution', 'convolution_backward'} <= set(floor['by_op'])
    memory = result['memory']
    assert memory['kind'] == 'cpu_peak_rss'
    assert memory['peak_mb'] >= memory['baseline_mb'] > 0


def test_inference_json(capsys):
    result = load_script('inference').main([CONFIG, '--warmup', '0', '--no-floor', *TINY_RUN])
    assert printed_json(capsys) == result
    for key in ('batch_s', 'images_per_s', 'split_s', 'peak_mem_mb', 'cpu_model'):
        assert key in result, key
    assert 'matrix_floor' not in result  # --no-floor
    assert set(result['split_s']) == {'backbone', 'neck', 'encoder', 'decoder', 'rest'}
    assert sum(result['split_s'].values()) == pytest.approx(result['batch_s'], abs=2e-3)


@pytest.mark.slow  # two fresh processes, each importing torch and building a model
def test_variants_run_in_separate_processes_with_ratios(capsys):
    """Two variants of one config: each its own run, ratios against the first."""
    result = load_script('train_step').main(
        [CONFIG, '--warmup', '0', *TINY_RUN, '--variant', 'q10',
         'model.query_head.num_queries=10'])
    runs = result['runs']
    assert list(runs) == ['dino_r18_quickstart_synthetic', 'q10']
    assert runs['q10']['config'] == CONFIG
    assert result['ratios_to_first']['dino_r18_quickstart_synthetic']['step_s'] == 1.0
    ratio = result['ratios_to_first']['q10']['step_s']
    assert ratio == pytest.approx(runs['q10']['step_s'] / runs[
        'dino_r18_quickstart_synthetic']['step_s'], rel=2e-2)


def test_component_timer_counts_outermost_regions_only():
    common = load_script('common')
    timer = common.ComponentTimer(torch.device('cpu'))
    timer.active = True
    with timer.region('positive_queries'):
        with timer.region('decoder'):  # inside another region: not counted separately
            pass
    timer.active = False
    with timer.region('encoder'):  # inactive (e.g. checkpoint recomputation): ignored
        pass
    assert set(timer.times) == {'positive_queries'}


def test_train_step_amp_and_glibc_tunables_run_as_asked(capsys, monkeypatch):
    """--amp uses the bfloat16 wrapper on a CPU; --glibc-tunables measures in a child
    process that has the tunables (one fresh process: about 10 s)."""
    script = load_script('train_step')
    args = script.parse_args([CONFIG, '--amp'])
    assert script.amp_options(args) == {'optim_wrapper.type': 'BFloat16OptimWrapper'}
    monkeypatch.delenv('GLIBC_TUNABLES', raising=False)
    result = script.main([CONFIG, '--warmup', '0', '--no-floor', *TINY_RUN, '--amp',
                          '--glibc-tunables'])
    assert printed_json(capsys) == result
    assert result['precision'] == 'bfloat16-autocast'
    assert result['glibc_tunables'] == script.LOW_MEMORY_TUNABLES
    plain = script.main([CONFIG, '--warmup', '0', '--no-floor', *TINY_RUN])
    assert plain['precision'] == 'float32' and plain['glibc_tunables'] is None
