"""Half-precision inference for ``tools/test.py --amp``."""
from __future__ import annotations

import torch
from mmengine.config import Config

TEST_LOOPS = ('TestLoop', 'mmengine.TestLoop')


def enable_test_amp(cfg: Config) -> torch.dtype:
    """Make ``Runner.test()`` run every ``test_step`` under autocast (in place).

    mmengine's ``TestLoop(fp16=True)`` wraps the step in ``mmengine.runner.amp.autocast``:
    float16 on CUDA, bfloat16 on a CPU (torch's CPU autocast dtype). The detectors cast their
    raw outputs to float32 before post-processing (``codetr.models.utils.precision``), so
    boxes and scores stay float32.

    Returns:
        The autocast dtype the test will use on this machine.

    Raises:
        ValueError: the config's ``test_cfg`` is another loop than ``TestLoop``.
    """
    loop = dict(cfg.get('test_cfg') or {})
    loop_type = loop.get('type', 'TestLoop')
    if loop_type not in TEST_LOOPS:
        raise ValueError(f'--amp sets fp16=True on a TestLoop, but test_cfg.type is '
                         f'{loop_type!r}; give that loop its own mixed-precision setting')
    cfg.test_cfg = dict(loop, type=loop_type, fp16=True)
    return torch.float16 if torch.cuda.is_available() else torch.get_autocast_dtype('cpu')
