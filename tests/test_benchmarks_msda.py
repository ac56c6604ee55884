"""benchmarks/msda_formulations.py: every standard-operator formulation of the deformable
attention gives the eager kernel's result; the ONNX Runtime run reports each one's error and
time; benchmarks/backends.py reads --ort-option settings."""
from __future__ import annotations

import pytest
import torch

from codetr.models.layers.ms_deform_attn import ms_deform_attn

from .test_benchmarks import load_script


@pytest.mark.parametrize('queries', [0, 7])
def test_formulations_match_the_eager_kernel(queries):
    bench = load_script('msda_formulations')
    shapes = bench.level_shapes((40, 56))
    assert shapes == [(10, 14), (5, 7), (3, 4), (2, 2), (1, 1)]
    value, loc, attn = bench.make_inputs(shapes, queries, batch=2)
    assert loc.shape == (2, queries or 192, 8, 5, 4, 2)
    pixel = loc * torch.tensor([[w, h] for h, w in shapes])[:, None, :] - 0.5
    assert (pixel < 0).any() and (pixel > torch.tensor([14, 10]) - 1).any()  # off the maps
    spatial = torch.tensor(shapes)
    starts = torch.tensor([0, 140, 175, 187, 191])
    expected = ms_deform_attn(value, spatial, starts, loc, attn)
    for name, fn in bench.FORMULATIONS.items():
        torch.testing.assert_close(fn(value, shapes, loc, attn), expected, atol=1e-5,
                                   rtol=1e-5, msg=name)


def test_ort_option_values():
    parse = load_script('backends').parse_ort_option
    assert parse('enable_mem_pattern=0') == ('enable_mem_pattern', False)
    assert parse('intra_op_num_threads=2') == ('intra_op_num_threads', 2)
    assert parse('session.intra_op.allow_spinning=0') == ('session.intra_op.allow_spinning',
                                                          '0')
    with pytest.raises(ValueError, match='KEY=VALUE'):
        parse('enable_mem_pattern')


@pytest.mark.slow  # two exports through the dynamo ONNX exporter (~15 s)
def test_formulations_benchmark_json(capsys):
    pytest.importorskip('onnxruntime')
    result = load_script('msda_formulations').main(
        ['--img-size', '48', '--queries', '6', '--iters', '2', '--formulations', 'grid_sample',
         'gather_level'])
    assert set(result['runs']) == {'eager_kernel', 'grid_sample', 'gather_level'}
    for name in ('grid_sample', 'gather_level'):
        assert result['runs'][name]['max_abs_err'] < 1e-5
        assert result['runs'][name]['ms'] > 0 and result['runs'][name]['nodes'] > 10
    assert result['runs']['eager_kernel']['vs_kernel'] == 1.0
