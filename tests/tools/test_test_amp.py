"""tools/test.py --amp: the test loop runs under autocast (bfloat16 on a CPU), and the
detections stay those of float32 within a stated tolerance."""
from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from mmengine.config import Config
from mmengine.runner.amp import autocast

from codetr.apis import build_test_pipeline
from codetr.apis.inference import pack_images
from codetr.deployment.verify import compare_detections
from codetr.engine import enable_test_amp
from tests.deployment.helpers import QUICKSTART_K0, build_model

from ..conftest import ROOT

# bfloat16 keeps 8 mantissa bits. Measured on the ranking-free quick-start Co-DINO below
# (two synthetic images of 140..160 px, ~270 detections above 0.5 each): boxes within 0.08 px
# and scores within 0.004 of float32. Allowed: 0.5 px and 0.01.
BOX_ATOL_PX = 0.5
SCORE_ATOL = 0.01
TOP_SCORE = 0.5


def _test_tool():
    spec = importlib.util.spec_from_file_location('test_tool_amp', ROOT / 'tools/test.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_amp_flag_turns_on_the_test_loops_autocast(tmp_path):
    tool = _test_tool()
    cfg = tool.build_cfg(tool.parse_args([str(QUICKSTART_K0), 'x.pth', '--amp',
                                          '--work-dir', str(tmp_path)]))
    assert cfg.test_cfg == dict(type='TestLoop', fp16=True)
    plain = tool.build_cfg(tool.parse_args([str(QUICKSTART_K0), 'x.pth',
                                            '--work-dir', str(tmp_path)]))
    assert not plain.test_cfg.get('fp16', False)
    assert enable_test_amp(Config(dict(test_cfg=dict(type='TestLoop')))) == (
        torch.float16 if torch.cuda.is_available() else torch.bfloat16)
    with pytest.raises(ValueError, match='TestLoop'):
        enable_test_amp(Config(dict(test_cfg=dict(type='MyLoop'))))


def _ranking_free_model(data: dict):
    """The spread quick-start Co-DINO made independent of the proposal ranking, which
    bfloat16 rounding reorders (the k-th proposal is paired with the k-th content query):
    every encoder position is selected and all content queries are one (as
    tests/test_bf16_autocast.py does). Its levels are strides 8, 16 and 32 of the padded
    batch: ResNet's padded convolutions give ceil(side / stride)."""
    height = max(img.shape[1] for img in data['inputs'])
    width = max(img.shape[2] for img in data['inputs'])
    positions = sum(-(-height // s) * -(-width // s) for s in (8, 16, 32))
    model = build_model(QUICKSTART_K0, dict(model=dict(
        query_head=dict(num_queries=positions),
        test_cfg=dict(query_head=dict(max_per_img=positions * 8, nms=None)))))
    content = model.query_head.transformer.query_embed.weight
    with torch.no_grad():
        content.copy_(content[:1].expand_as(content))
    return model


def test_bfloat16_test_step_keeps_the_top_float32_detections(tmp_path):
    """What TestLoop(fp16=True) runs on a CPU: ``test_step`` inside mmengine's autocast."""
    from codetr.datasets.synthetic import make_synthetic_dataset
    make_synthetic_dataset(tmp_path, num_train=0, num_val=2, seed=5, min_size=140,
                           max_size=160)
    cfg = Config.fromfile(str(QUICKSTART_K0))
    images = sorted(str(p) for p in (tmp_path / 'val').iterdir())
    data = pack_images(build_test_pipeline(cfg, from_array=False), images)
    model = _ranking_free_model(data)
    with torch.no_grad():
        float32 = model.test_step(copy.deepcopy(data))
        with autocast(enabled=True):
            assert torch.get_autocast_dtype('cpu') == torch.bfloat16
            half = model.test_step(copy.deepcopy(data))
    for ref, got in zip(float32, half):
        assert got.pred_instances.scores.dtype == torch.float32
        assert (ref.pred_instances.scores > TOP_SCORE).sum() >= 5
        report = compare_detections(ref.pred_instances, got.pred_instances,
                                    score_thr=TOP_SCORE, box_atol=BOX_ATOL_PX,
                                    score_atol=SCORE_ATOL)
        assert report.ok, report.failures[:3]
        assert report.max_score_diff > 0  # bfloat16 did run
