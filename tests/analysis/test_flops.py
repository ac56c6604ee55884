"""Per-component FLOPs of the quick-start Co-DINO: rows sum to the total, aux heads cost 0."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmengine.analysis import FlopAnalyzer
from mmengine.config import Config

from codetr.analysis.flops import component_flops, flops_table, sdpa_flop_jit
from codetr.registry import MODELS

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'configs' / 'quickstart' / 'co_dino_r18_k2_quickstart_synthetic.py'


@pytest.fixture(scope='module')
def model():
    return MODELS.build(Config.fromfile(CONFIG).model)


@pytest.fixture(scope='module')
def result():
    """The tool itself on a 64 x 64 input (its JSON is what the test reads)."""
    spec = importlib.util.spec_from_file_location('get_flops', ROOT / 'tools' /
                                                  'analysis_tools' / 'get_flops.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool.main([str(CONFIG), '--shape', '64'])


def _row(result, name):
    return next(c for c in result['components'] if c['name'] == name)


def test_components_sum_to_the_totals(result, model):
    rows = result['components']
    assert [c['name'] for c in rows] == [
        'backbone', 'neck', 'encoder', 'decoder', 'positive queries: rcnn',
        'positive queries: atss', 'adapter', 'aux head: rcnn', 'aux head: atss',
        'query head (other)', 'other']
    assert sum(c['flops'] for c in rows) == result['total_flops']
    assert sum(c['params'] for c in rows) == result['total_params']
    assert result['total_params'] == sum(p.numel() for p in model.parameters())
    assert result['input_shape'] == (1, 3, 64, 64)
    for name in ('backbone', 'neck', 'encoder', 'decoder', 'query head (other)'):
        assert _row(result, name)['flops'] > 0 and _row(result, name)['runs_at_test']
    assert _row(result, 'other')['params'] == 0  # every parameter sits in a component


def test_aux_branch_costs_nothing_at_test_time_but_its_parameters_are_listed(result, model):
    for name in ('rcnn', 'atss'):
        row = _row(result, f'aux head: {name}')
        assert row['flops'] == 0 and not row['runs_at_test']
        assert row['params'] == sum(p.numel() for p in model.aux_heads[name].parameters()) > 0
        assert _row(result, f'positive queries: {name}')['flops'] == 0
    assert _row(result, 'adapter')['flops'] == 0 and _row(result, 'adapter')['params'] > 0
    assert 'aux head: atss' in flops_table(result)


def test_neck_flops_by_hand(result):
    # 64 x 64 input: C3..C5 of ResNet-18 are 8x8x128, 4x4x256, 2x2x512; each goes through a
    # 1x1 conv to 64 channels (one multiply-add per input channel, output channel and
    # pixel) and a GroupNorm (mmengine counts 5 per element with affine parameters).
    convs = 8 * 8 * 128 * 64 + 4 * 4 * 256 * 64 + 2 * 2 * 512 * 64
    norms = 5 * (8 * 8 + 4 * 4 + 2 * 2) * 64
    assert _row(result, 'neck')['flops'] == convs + norms == 944384


def test_deformable_attention_is_counted_in_the_encoder(result):
    # The encoder's layer: value / offsets / weights / output projections and the FFN on
    # 84 = 64 + 16 + 4 tokens, plus 4 multiply-adds per sampled point and channel
    # (84 queries x 4 heads x 3 levels x 4 points x 16 channels).
    tokens, dims, ffn = 84, 64, 256
    linears = tokens * dims * (dims + 96 + 48 + dims) + 2 * tokens * dims * ffn
    sampling = 84 * 4 * 3 * 4 * 16 * 4
    norms = 2 * 5 * tokens * dims
    assert _row(result, 'encoder')['flops'] == linears + sampling + norms


def test_sdpa_handle_by_hand():
    class Attention(torch.nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    q, k, v = torch.randn(2, 4, 10, 8), torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 16)
    analyzer = FlopAnalyzer(Attention(), (q, k, v))
    analyzer.set_op_handle('aten::scaled_dot_product_attention', sdpa_flop_jit)
    assert analyzer.total() == 2 * 4 * 10 * 6 * (8 + 16)


def test_eval_through_an_aux_head_counts_it(model):
    # test_cfg.eval_module='one-stage' makes CoDETR predict with its ATSS head (eval_head):
    # the encoder, the adapter and that head run, the decoder does not.
    model.eval_head = 'atss'
    try:
        result = component_flops(model, (64, 64))
    finally:
        model.eval_head = None
    assert _row(result, 'decoder')['flops'] == 0 and _row(result, 'adapter')['flops'] > 0
    atss = _row(result, 'aux head: atss')
    assert atss['flops'] > 0 and atss['runs_at_test']
    assert _row(result, 'aux head: rcnn')['flops'] == 0
    json.dumps(result)  # plain data, as --out-json writes it
