"""Detect objects in images and save the drawn predictions and their JSON.

    python demo/image_demo.py IMAGES CONFIG --weights CKPT [--out-dir outputs]

The same command as ``codetr-infer``; the implementation and the flags are in
:mod:`codetr.cli.infer`. This clone's ``codetr`` is put first on ``sys.path``.
"""
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from codetr.cli.infer import main, parse_args  # noqa: E402

__all__ = ['main', 'parse_args']

if __name__ == '__main__':
    main()
