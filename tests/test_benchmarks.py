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


def printed_json(capsys, progress: str | None = None) -> dict:
    """The last stdout line as JSON; ``progress`` must open a line of standard error."""
    captured = capsys.readouterr()
    if progress is not None:
        assert progress in captured.err, captured.err
    return json.loads(captured.out.strip().splitlines()[-1])


def test_train_step_json(capsys):
    result = load_script('train_step').main([CONFIG, '--warmup', '0', *TINY_RUN])
    # --warmup 0: one extra untimed step first, to count the saved activations
    assert printed_json(capsys, progress='train_step: 2/2 steps [') == result
    for key in ('step_s', 'images_per_s', 'forward_s', 'backward_step_s', 'forward_split_s',
                'components_included', 'peak_mem_mb', 'memory', 'cpu_model', 'matrix_floor',
                'activations_saved_mb'):
        assert key in result, key
    assert 'vs_reference' not in result  # no fixed reference figures: only same-run ratios
    assert result['activations_saved_mb'] > 0
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
    assert printed_json(capsys, progress='inference: 1/1 batches [') == result
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


def test_saved_tensor_meter_counts_activations_not_parameters():
    from torch.utils.checkpoint import checkpoint
    common = load_script('common')
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(),
                                torch.nn.Linear(256, 256))
    x = torch.randn(1024, 256, requires_grad=True)
    meter = common.SavedTensorMeter()
    with meter.recording(model):
        model(x).sum().backward()
    # The input (1 MB, for the first weight's gradient) and the ReLU output (1 MB, for the
    # ReLU and the second weight's gradient, one storage); the weights (0.25 MB) are not.
    assert meter.saved_mb == 2.0
    with meter.recording(model):
        checkpoint(model, x, use_reentrant=False).sum().backward()
    assert meter.saved_mb == 1.0  # a checkpointed region keeps its input only


def test_sharded_merge_takes_the_largest_peak_and_slowest_step():
    sharded = load_script('sharded')
    rank = dict(benchmark='train_step', config='c.py', device='cpu', threads=1, batch_size=1,
                img_size=64, num_gt=2, iters=1, warmup=0, precision='float32',
                strategy='fsdp', nproc=2, model_params=10, wrapped_units=3)
    ranks = [dict(rank, step_s=2.0, forward_s=1.0, backward_step_s=1.0, peak_mem_mb=900.0,
                  local_params=5, memory={'peak_mb': 900.0}),
             dict(rank, step_s=4.0, forward_s=1.5, backward_step_s=2.5, peak_mem_mb=800.0,
                  local_params=5, memory={'peak_mb': 800.0})]
    merged = sharded.merge(ranks)
    assert merged['step_s'] == 4.0 and merged['peak_mem_mb'] == 900.0
    assert merged['peak_mem_mb_per_rank'] == [900.0, 800.0]
    assert merged['local_params_per_rank'] == [5, 5]
    assert merged['images_per_s'] == 0.5  # 2 ranks x batch 1 per 4 s


@pytest.mark.slow  # two processes importing torch and building a model
def test_train_step_fsdp_mode_reports_each_rank(capsys):
    result = load_script('train_step').main(
        [CONFIG, '--warmup', '0', *TINY_RUN, '--strategy', 'fsdp', '--nproc', '2'])
    assert result['nproc'] == 2 and len(result['peak_mem_mb_per_rank']) == 2
    assert sum(result['local_params_per_rank']) >= result['model_params']
    assert result['wrapped_units'] >= 2  # the root and the encoder layer


def test_backend_sizes_and_ratios_to_eager():
    backends = load_script('backends')
    assert backends.parse_img_size('320') == 320
    assert backends.parse_img_size('800x1333') == (800, 1333)
    runs = {'torch': {'batch_1': {'batch_s': 2.0, 'peak_mem_mb': 1000.0}},
            'onnxruntime': {'batch_1': {'batch_s': 1.0, 'peak_mem_mb': 1200.0}}}
    assert backends._vs_torch(runs)['onnxruntime'] == {
        'batch_1': {'speedup': 2.0, 'memory_ratio': 1.2}}
    batch = backends.synthetic_images(2, (48, 64))
    assert batch['inputs'][0].shape == (3, 48, 64)
    assert batch['data_samples'][1].metainfo['img_shape'] == (48, 64)


def test_ort_profile_summary_sums_the_last_run_by_operator(tmp_path):
    """Only the last model_run counts; kernel times (us) summed per op type, largest first."""
    def node(name, op, ts, dur):
        return {'cat': 'Node', 'name': f'{name}_kernel_time', 'ts': ts, 'dur': dur,
                'args': {'op_name': op}}
    events = [{'cat': 'Session', 'name': 'model_run', 'ts': 0, 'dur': 5000},
              node('warm', 'GridSample', 10, 4000),
              {'cat': 'Session', 'name': 'model_run', 'ts': 10000, 'dur': 10000},
              node('gs0', 'GridSample', 10100, 3000), node('gs1', 'GridSample', 13200, 2000),
              node('conv', 'Conv', 15300, 4000),
              {'cat': 'Node', 'name': 'conv_fence_before', 'ts': 15250, 'dur': 0}]
    trace = tmp_path / 'profile.json'
    trace.write_text(json.dumps(events))
    summary = load_script('backends').profile_summary(str(trace))
    assert summary['run_ms'] == 10.0 and summary['kernels_ms'] == 9.0
    assert summary['op_types'] == [{'op': 'GridSample', 'ms': 5.0, 'share': 0.5},
                                   {'op': 'Conv', 'ms': 4.0, 'share': 0.4}]
    assert summary['slowest_nodes'][0] == {'node': 'conv', 'op': 'Conv', 'ms': 4.0}


def test_export_dir_is_reused_when_its_files_are_there(tmp_path):
    from types import SimpleNamespace
    backends = load_script('backends')
    for name in ('weights.pth', 'model.onnx'):
        (tmp_path / name).write_text('x')
    args = SimpleNamespace(backend=['torch', 'onnxruntime'], config='unused.py')
    prepared = backends.prepare(args, tmp_path)  # nothing built or exported
    assert prepared['reused_export'] == str(tmp_path) and prepared['export_s'] is None
    assert prepared['files'] == {'onnx': str(tmp_path / 'model.onnx')}


def test_inference_refuses_a_rectangle_without_backend():
    with pytest.raises(SystemExit, match='HxW is for --backend'):
        load_script('inference').main([CONFIG, '--img-size', '64x96'])


@pytest.mark.slow  # an export plus four fresh processes (about a minute of CPU)
def test_backends_side_by_side_json(capsys):
    pytest.importorskip('onnxruntime')
    config = str(ROOT / 'configs/quickstart/co_dino_r18_k0_quickstart_synthetic.py')
    result = load_script('inference').main(
        [config, '--backend', 'onnxruntime', '--batch-sizes', '1', '2',  # + torch baseline
         '--img-size', '96x128', '--iters', '1', '--warmup', '1', '--threads', '1',
         '--ort-profile'])
    assert printed_json(capsys) == result
    assert result['benchmark'] == 'inference_backends' and result['img_size'] == '96x128'
    for backend in ('torch', 'onnxruntime'):
        for key, batch in (('batch_1', 1), ('batch_2', 2)):
            run = result['runs'][backend][key]
            assert run['batch_size'] == batch and run['batch_s'] > 0
            assert run['per_image_s'] == pytest.approx(run['batch_s'] / batch, rel=1e-2)
            assert run['peak_mem_mb'] >= run['memory']['baseline_mb'] > 0
    profile = result['runs']['onnxruntime']['batch_2']['profile']
    assert not list(Path.cwd().glob('onnxruntime_profile*'))  # the trace file is removed
    assert profile['op_types'][0]['ms'] >= profile['op_types'][-1]['ms'] > 0
    assert 0 < profile['kernels_ms'] <= profile['run_ms']
    speedup = result['vs_torch']['onnxruntime']['batch_1']['speedup']
    assert speedup == pytest.approx(result['runs']['torch']['batch_1']['batch_s'] /
                                    result['runs']['onnxruntime']['batch_1']['batch_s'],
                                    rel=1e-2)
