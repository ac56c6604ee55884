"""Every shipped config with a test set can run ``tools/test.py --tta``: a DetTTAModel and a
tta_pipeline whose views are the test scale(s), plain and flipped, as the test pipeline."""
from __future__ import annotations

from pathlib import Path

import pytest
from mmengine.config import Config

from codetr.registry import TRANSFORMS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / 'configs').rglob('*.py')
                 if '_base_' not in p.parts and 'tests' not in p.parts)


def _test_resize(pipeline: list) -> dict:
    return next(t for t in pipeline if t['type'] == 'Resize')


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: str(p.relative_to(ROOT / 'configs')))
def test_config_has_a_tta_model_and_pipeline(path: Path):
    cfg = Config.fromfile(path)
    assert cfg.tta_model.type == 'DetTTAModel'
    load, tta = cfg.tta_pipeline
    assert load.type == 'LoadImageFromFile' and tta.type == 'TestTimeAug'
    scales, flips, *rest = tta.transforms
    test_resize = _test_resize(cfg.test_dataloader.dataset.pipeline)
    assert [s['scale'] for s in scales] == [test_resize['scale']]
    assert sorted(f['prob'] for f in flips) == [0.0, 1.0]
    pack = rest[-1][0]
    assert pack.type == 'PackDetInputs' and {'flip', 'flip_direction', 'ori_shape',
                                             'scale_factor'} <= set(pack.meta_keys)
    TRANSFORMS.build(tta)  # every view's transforms exist
