"""Check codetr's GPU path in one command (under 8 minutes on one GPU); prints one JSON object.

    python benchmarks/gpu_check.py [--quick] [--device auto|cuda|cpu] [--out FILE]

1. ``dependencies``: the packages codetr needs are looked up *before* anything imports them;
   on a machine with its own torch but without mmengine, mmcv-lite, pycocotools, timm, ...
   the JSON lists what is missing and the pip command, and the script exits with status 2.
2. ``ms_deform_attn``: the deformable-attention backends (CUDA: triton, pytorch, mmcv if
   installed; CPU: cpp and pytorch) at Co-DINO R50 shapes (5 levels of an 800 x 1333 batch of
   2, 8 heads x 32, 4 points; the encoder's 89k queries and the decoder's 900) with values
   stored in float32, bfloat16 and float16: the output's and each input gradient's error
   against the pytorch backend in float64 on the same rounded inputs, and times. The pytorch
   backend's low-precision results are shown but not judged (it is the fallback).
3. ``train_step``: one Co-DINO R50 training step (K = 2) at 1333 x 800, batch 2, in float32,
   AMP float16 (``AmpOptimWrapper``, dynamic loss scaling) and bfloat16: time, peak memory,
   finite losses and gradients. The MMDetection port fails the float16 step (a Half / Float
   ``index_put`` and NaN in the Hungarian matching); codetr's heads compute targets and
   losses in float32. On a CPU: float32 and bfloat16 autocast (``BFloat16OptimWrapper``) at
   320 x 320, batch 1, and float16 autocast with a ``GradScaler`` (the AMP code path, which
   mmengine runs on CUDA only) at 128 x 128.
4. ``ddp``: one training step through ``MMDistributedDataParallel`` in a one-process NCCL
   group (gloo on a CPU).
5. ``predict``: images per second of ``model.predict`` at 1333 x 800, batch 2 (CPU: 320).

Everything a device cannot run is listed under ``skipped`` with the reason. ``--quick``
uses the quick-start Co-DINO (R18, tiny widths) at 64 px and small attention shapes: for
tests. Exit status: 0 when every check that ran passed, 1 otherwise, 2 for missing packages.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import traceback
from pathlib import Path

# import name -> pip name; looked up before anything imports them (the script must say
# what is missing rather than fail on the first import).
REQUIRED = {'torch': 'torch', 'torchvision': 'torchvision', 'mmengine': 'mmengine',
            'mmcv': 'mmcv-lite', 'numpy': 'numpy', 'scipy': 'scipy',
            'pycocotools': 'pycocotools', 'cv2': 'opencv-python-headless',
            'timm': 'timm', 'matplotlib': 'matplotlib', 'terminaltables': 'terminaltables'}
ROOT = Path(__file__).resolve().parents[1]
FULL_CONFIG = 'configs/co_dino/co_dino_5scale_r50_8xb2_1x_coco.py'
QUICK_CONFIG = 'configs/quickstart/co_dino_r18_k2_quickstart_synthetic.py'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='tiny model and shapes (a CPU test of the script itself)')
    parser.add_argument('--device', default='auto', choices=('auto', 'cuda', 'cpu'))
    parser.add_argument('--out', help='also write the JSON to this file')
    return parser.parse_args(argv)


def missing_packages() -> dict[str, str]:
    """``{import name: pip name}`` of the required packages that are not installed."""
    return {mod: pip for mod, pip in REQUIRED.items()
            if importlib.util.find_spec(mod) is None}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    missing = missing_packages()
    if missing:
        report = {'benchmark': 'gpu_check', 'passed': False, 'missing_packages': missing,
                  'install': f'pip install {" ".join(sorted(missing.values()))} '
                             f'(or pip install -r {ROOT / "requirements.txt"})'}
        emit(report, args.out)
        raise SystemExit(2)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / 'benchmarks'))
    import gpu_check_parts as parts
    report = parts.run_all(args)
    emit(report, args.out)
    if not report['passed']:
        raise SystemExit(1)
    return report


def emit(report: dict, out: str | None) -> None:
    text = json.dumps(report)
    print(text)
    if out:
        Path(out).write_text(text + '\n')


def timed(fn, *args, **kwargs) -> tuple[object, float]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def failure(err: BaseException) -> dict:
    """A check's record of an exception: the message and the innermost frames."""
    frames = traceback.format_exception(type(err), err, err.__traceback__)
    return {'ok': False, 'error': f'{type(err).__name__}: {err}',
            'traceback': ''.join(frames[-3:])[-2000:]}


if __name__ == '__main__':
    main()
